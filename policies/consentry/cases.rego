# METADATA
# title: Need-to-know case binding (principle 3)
# description: |
#   Case work (a purpose with case_required) needs the case named by x-case-id to be open, to
#   concern this customer, and to be assigned to the caller. Break-glass access skips this check
#   (and is flagged and obligated instead, see consentry.breakglass).
package consentry.cases

import data.consentry.breakglass
import data.consentry.util

# METADATA
# title: Request denials
# description: |
#   A request that names a case (x-case-id, or a case route's path) while no customer is known
#   for it - consentry has no record of the case, or the record names no customer - is denied:
#   without the case's customer no consent, case, erasure or retention check could run, so a
#   case the state has not caught up with would be served to anyone. Break-glass does not help:
#   there is still no customer to decide for.
deny contains util.reason("case.not_found", 403, sprintf("case %q is not known with its customer", [input.case_id])) if {
	object.get(input, "case_id", "") != ""
	object.get(object.get(input, "resource", {}), "customer_id", "") == ""
	object.get(object.get(object.get(input, "enrichment", {}), "case", {}), "customer_id", "") == ""
}

# METADATA
# title: Record denials
# description: Case reasons that deny access to one customer's record rec.
record_deny(rec) := set() if {
	not util.purpose.case_required
} else := set() if {
	breakglass.active
} else := _case_reasons(rec)

_case_reasons(rec) := {util.reason("case.missing", 403, "this purpose needs an assigned case: send x-case-id")} if {
	object.get(input, "case_id", "") == ""
} else := {util.reason("case.not_found", 403, sprintf("case %q does not exist", [input.case_id]))} if {
	not rec.enrichment.case
} else := set() if {
	# The common case in one rule: open, about this customer, assigned to the caller.
	_case_ok(rec.enrichment.case, rec.customer_id)
} else := _problems(rec.enrichment.case, rec.customer_id)

_case_ok(c, customer_id) if {
	c.status == "open"
	c.customer_id == customer_id
	input.subject.id in c.assignees
	purpose_ok(c)
}

# METADATA
# title: Case purpose
# description: |
#   True when case c serves the declared purpose: it was opened for that purpose or a parent
#   of it (fideslang keys), or it names no purpose. A case opened for one task does not open
#   the customer's record for another task that also needs a case.
purpose_ok(c) if object.get(c, "purpose", "") == ""

purpose_ok(c) if util.purpose_covers(c.purpose, input.purpose)

_problems(c, customer_id) := ((_closed(c) | _mismatch(c, customer_id)) | _unassigned(c)) | _purpose_mismatch(c)

_purpose_mismatch(c) := {util.reason("case.purpose_mismatch", 403, sprintf("case %q was opened for %q, not for %q", [_id(c), c.purpose, input.purpose]))} if {
	not purpose_ok(c)
} else := set()

# A case record missing a member is read as the member's zero value (no status is not open,
# no customer is not this one): a partial record from bundle data must not pass for a good one.
_closed(c) := {util.reason("case.closed", 403, sprintf("case %q is closed", [_id(c)]))} if {
	object.get(c, "status", "") != "open"
} else := set()

_mismatch(c, customer_id) := {util.reason("case.customer_mismatch", 403, sprintf("case %q is not about this customer", [_id(c)]))} if {
	object.get(c, "customer_id", "") != customer_id
} else := set()

_unassigned(c) := {util.reason("case.not_assigned", 403, sprintf("case %q is not assigned to the caller", [_id(c)]))} if {
	not input.subject.id in object.get(c, "assignees", [])
} else := set()

_id(c) := object.get(c, "id", object.get(input, "case_id", ""))
