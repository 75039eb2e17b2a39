# METADATA
# title: Break-glass access (principle 9)
# description: |
#   A caller whose role permits it may invoke emergency access with a written justification
#   (x-break-glass header) for one named customer. It skips the need-to-know case check only -
#   never purpose, role, consent, retention or erasure - and is always flagged and obligates
#   recording the justification. Special categories (GDPR Art. 9 health data, payment data)
#   are released under break-glass only to a role that may itself use break-glass and see the
#   category (consentry.minimization), and such a release is flagged on its own.
package consentry.breakglass

import data.consentry.minimization
import data.consentry.util

_requested if input.break_glass

# A role that may use break-glass and may act for the declared purpose: a dpo's break-glass
# does not lend a support agent's purpose its case exemption.
_permitted if {
	some role in util.roles
	emergency_role(role)
}

# METADATA
# title: Emergency role
# description: |
#   True when role may use break-glass (catalogue roles[role].break_glass) and may act for the
#   declared purpose.
emergency_role(role) if {
	r := util.catalog.roles[role]
	r.break_glass == true
	input.purpose in r.purposes
}

_justified if {
	count(trim_space(input.break_glass.justification)) >= util.catalog.break_glass.min_justification_length
}

_customer_id := object.get(object.get(input, "resource", {}), "customer_id", "")

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
# description: |
#   A break-glass request that is not permitted, not justified or not bound to one named
#   customer (a list or an export - even on a route naming a customer -, a search, a route
#   without a customer id) is denied outright:
#   emergency access opens one customer's record, never every record a query returns.
deny contains util.reason("break_glass.not_permitted", 403, "none of the caller's roles may use break-glass access") if {
	_requested
	not _permitted
}

deny contains util.reason("break_glass.justification_missing", 400, sprintf("break-glass access needs a justification of at least %d characters", [util.catalog.break_glass.min_justification_length])) if {
	_requested
	not _justified
}

deny contains util.reason("break_glass.customer_required", 403, "break-glass access opens one named customer's record: the request names no customer") if {
	_requested
	_customer_id == ""
}

# A list or an export returns many records whatever customer id the route carries: emergency
# access never opens one.
deny contains util.reason("break_glass.customer_required", 403, sprintf("break-glass access opens one named customer's record, never a list or an export (action %q)", [input.action])) if {
	_requested
	input.action in {"list", "export"}
}

# METADATA
# title: Record denials
# description: |
#   Under break-glass, a record of any customer but the one the request names is denied (a
#   response phase carrying other customers' records).
record_deny(rec) := {util.reason("break_glass.customer_required", 403, sprintf("break-glass access opens the named customer's record only, not customer %q's", [rec.customer_id]))} if {
	_requested
	rec.customer_id != _customer_id
} else := set()

# METADATA
# title: Information reasons
# description: Reasons reported on an allowed break-glass decision.
info contains util.reason("break_glass.used", 200, "emergency access: justification recorded, flagged for review") if active

info contains util.reason("break_glass.special_category", 200, sprintf("emergency access released special-category data (GDPR Art. 9): %s", [concat(", ", sort(minimization.special_released))])) if {
	active
	count(minimization.special_released) > 0
}

# METADATA
# title: Obligations
# description: The front door must record the justification with the decision.
obligations contains {"type": "record_justification", "params": {"justification": input.break_glass.justification}} if active

# METADATA
# title: Flags
# description: |
#   Marks the decision for reviewers: "break_glass" on every emergency access, and
#   "break_glass.special_category" as well when it released a special-category field.
flags contains "break_glass" if active

flags contains "break_glass.special_category" if {
	active
	count(minimization.special_released) > 0
}
