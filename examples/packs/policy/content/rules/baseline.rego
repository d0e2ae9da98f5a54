# Baseline security policy: a scan result is allowed when it has no critical
# findings, at most `max_high` high ones, and no leaked secrets.
package stellaops.baseline

import rego.v1

default allow := false

allow if {
	count(critical) == 0
	count(high) <= data.stellaops.baseline.max_high
	count(input.secrets) == 0
}

critical contains f if {
	some f in input.findings
	f.severity == "critical"
}

high contains f if {
	some f in input.findings
	f.severity == "high"
}

deny contains msg if {
	some f in critical
	msg := sprintf("critical finding %s in %s", [f.id, f.location])
}

deny contains msg if {
	some s in input.secrets
	msg := sprintf("secret of kind %s in %s", [s.kind, s.location])
}
