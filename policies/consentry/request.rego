# METADATA
# title: Purpose and role (principle 2)
# description: |
#   Every request declares a known purpose, comes from an authenticated subject whose role
#   allows that purpose, and asks for an action that purpose permits.
package consentry.request

import data.consentry.util

_subject_types := {"employee", "customer", "processor", "service"}

_actions := {"read", "list", "create", "update", "delete", "export", "erase", "access_report"}

# METADATA
# title: Request-level denials
# description: |
#   Reasons that deny the whole request, whatever the customer's state. A well-formed request
#   (the common case) is recognised with one rule instead of trying every denial.
deny := set() if _well_formed

else := _deny

# True exactly when none of the _deny rules below applies.
_well_formed if {
	_time_known
	object.get(input, "phase", "request") in _phases
	input.subject.type in _subject_types
	object.get(input.subject, "id", "") != ""
	input.action in _actions
	input.purpose != ""
	util.purpose
	_role_allows_purpose
	input.action in util.purpose.actions
	not _customer_missing
}

_deny contains util.reason("subject.unauthenticated", 401, "no verified credential") if {
	not input.subject.type
}

_deny contains util.reason("subject.unauthenticated", 401, "no verified credential") if {
	input.subject.type == ""
}

_deny contains util.reason("subject.type_unknown", 403, sprintf("subject type %q is not one of employee, customer, processor, service", [input.subject.type])) if {
	input.subject.type
	input.subject.type != ""
	not input.subject.type in _subject_types
}

_deny contains util.reason("subject.id_missing", 401, "the credential names no subject") if {
	input.subject.type in _subject_types
	object.get(input.subject, "id", "") == ""
}

_deny contains util.reason("action.unknown", 403, sprintf("action %q is not known", [input.action])) if {
	not input.action in _actions
}

_deny contains util.reason("purpose.missing", 403, "the request declares no purpose (x-purpose header)") if {
	object.get(input, "purpose", "") == ""
}

_phases := {"request", "response"}

# Record checks run by phase: another value would skip them.
_deny contains util.reason("phase.unknown", 400, sprintf("phase %q is neither request nor response", [input.phase])) if {
	not object.get(input, "phase", "request") in _phases
}

# Expiry, retention and agreement periods compare with the decision time: without it nothing
# would ever expire.
_time_known if input.time.now_ns > 0

_deny contains util.reason("time.missing", 503, "the input carries no decision time (time.now_ns), so expiry cannot be checked") if {
	not _time_known
}

_deny contains util.reason("purpose.unknown", 403, sprintf("purpose %q is not in the purpose catalogue", [input.purpose])) if {
	input.purpose != ""
	not util.catalog.purposes[input.purpose]
}

_deny contains util.reason("role.purpose_not_allowed", 403, sprintf("none of the caller's roles %v may act for purpose %q", [util.roles, input.purpose])) if {
	util.purpose
	not _role_allows_purpose
}

_deny contains util.reason("purpose.action_not_allowed", 403, sprintf("purpose %q does not permit action %q", [input.purpose, input.action])) if {
	util.purpose
	input.action in _actions
	not input.action in util.purpose.actions
}

# A change to one customer's data (update, delete, erase) or a question about it (access
# report) runs the record checks (consent, case, rights, erasure, retention) for that
# customer: on a route that names no customer none of them could run, so it is denied. A
# create is exempt (its customer does not exist yet), and reads, lists and exports without a
# customer are filtered record by record in the response phase (filter_records). A purpose
# with customer_required in the catalogue serves one named customer per request, whatever
# the action but create.
_customer_actions := {"update", "delete", "erase", "access_report"}

_customer_missing if {
	object.get(input.resource, "customer_id", "") == ""
	_customer_bound
}

_customer_bound if input.action in _customer_actions

_customer_bound if {
	util.purpose.customer_required == true
	input.action != "create"
}

_deny contains util.reason("resource.customer_missing", 403, sprintf("action %q for purpose %q needs a route that names one customer (no customer id was mapped)", [input.action, input.purpose])) if {
	_customer_missing
}

_role_allows_purpose if {
	some role in util.roles
	input.purpose in util.catalog.roles[role].purposes
}

# METADATA
# title: Record denials
# description: |
#   A purpose with customer_required serves the customer the request names and no other: a
#   record of another customer (a response phase carrying several) is denied.
record_deny(rec) := {util.reason("resource.other_customer", 403, sprintf("purpose %q serves the named customer's record only, not customer %q's", [input.purpose, rec.customer_id]))} if {
	util.purpose.customer_required == true
	rec.customer_id != object.get(input.resource, "customer_id", "")
} else := set()
