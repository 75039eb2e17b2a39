# METADATA
# title: Break-glass access (principle 9)
# description: |
#   A caller whose role permits it may invoke emergency access with a written justification
#   (x-break-glass header). It skips the need-to-know case check only - never purpose, role,
#   consent, retention or erasure - and is always flagged and obligates recording the
#   justification.
package consentry.breakglass

import data.consentry.util

_requested if input.break_glass

# A role that may use break-glass and may act for the declared purpose: a dpo's break-glass
# does not lend a support agent's purpose its case exemption.
_permitted if {
	some role in util.roles
	r := util.catalog.roles[role]
	r.break_glass == true
	input.purpose in r.purposes
}

_justified if {
	count(trim_space(input.break_glass.justification)) >= util.catalog.break_glass.min_justification_length
}

# METADATA
# title: Active
# description: True when break-glass was requested, is permitted for the caller and justified.
active if {
	_requested
	_permitted
	_justified
}

# METADATA
# title: Request-level denials
# description: A break-glass request that is not permitted or not justified is denied outright.
deny contains util.reason("break_glass.not_permitted", 403, "none of the caller's roles may use break-glass access") if {
	_requested
	not _permitted
}

deny contains util.reason("break_glass.justification_missing", 400, sprintf("break-glass access needs a justification of at least %d characters", [util.catalog.break_glass.min_justification_length])) if {
	_requested
	not _justified
}

# METADATA
# title: Information reasons
# description: Reasons reported on an allowed break-glass decision.
info contains util.reason("break_glass.used", 200, "emergency access: justification recorded, flagged for review") if active

# METADATA
# title: Obligations
# description: The front door must record the justification with the decision.
obligations contains {"type": "record_justification", "params": {"justification": input.break_glass.justification}} if active

# METADATA
# title: Flags
# description: Marks the decision for reviewers.
flags contains "break_glass" if active
