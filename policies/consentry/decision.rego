# METADATA
# title: consentry decision
# description: |
#   The one query every front door evaluates: data.consentry.decision. It combines the
#   request-level rules (purpose, role, action, break-glass, processor agreement, writes) with
#   the record-level rules (consent, case, customer rights, retention and erasure) and the
#   per-field outcomes into the decision document (policies/schema/decision.json).
#   Deny by default: allow holds only when no rule denies.
# scope: subpackages
# schemas:
#   - input: schema.input
package consentry

import data.consentry.breakglass
import data.consentry.cases
import data.consentry.consent
import data.consentry.fastpath
import data.consentry.minimization
import data.consentry.processor
import data.consentry.request
import data.consentry.retention
import data.consentry.rights
import data.consentry.util

# Status precedence when several reasons deny: authentication first, then malformed requests,
# then forbidden, then legal (consent, erasure, retention).
_status_rank := [401, 400, 422, 503, 403, 451]

_request_denials := (((((request.deny | breakglass.deny) | processor.deny) | rights.deny) | minimization.deny) | cases.deny) | _custom_denials

# Policy authors' own rules: every package consentry.custom.<name> may add request-level
# reasons with a `deny` set (or deny outright with a boolean `deny`) and record-level reasons
# with `record_deny[customer_id]` sets (see util.records), without editing the library. Only
# those two rules of each package are read (never its other rules or data, whatever their
# size). The engine refuses other shapes, and deny rules in deeper packages, at load time
# instead of ignoring them. See docs/policy-input.md.
_custom_denials := {r |
	some name
	d := data.consentry.custom[name].deny
	some r in _custom_reasons(name, d)
}

# A reason made by util.reason is kept; anything else a custom set holds (the common
# `deny contains msg` with a string) becomes one, so that it denies with its message instead of
# failing the decision.
_custom_reasons(_, d) := {_custom_reason(x) | some x in d} if is_set(d)

_custom_reason(x) := x if {
	is_string(x.code)
	is_number(x.status)
	is_string(x.message)
} else := util.reason("custom.deny", 403, x) if {
	is_string(x)
} else := util.reason("custom.deny", 403, sprintf("%v", [x]))

_custom_reasons(name, d) := {util.reason("custom.deny", 403, sprintf("denied by data.consentry.custom.%s", [name]))} if {
	d == true
}

_custom_record_denials(rec) := {_custom_reason(x) |
	some name
	some x in data.consentry.custom[name].record_deny[rec.customer_id]
}

# Whether any custom rule denies anything: the fast path, which knows only the library's
# rules, decides only when none does.
_custom_active if count(_custom_denials) > 0

_custom_active if {
	some name
	some _, rs in data.consentry.custom[name].record_deny
	count(rs) > 0
}

_state_denials(rec) := {util.reason("state.unavailable", 503, sprintf("customer state could not be read: %v", [rec.enrichment.errors]))} if {
	count(object.get(rec.enrichment, "errors", [])) > 0
} else := set()

_record_denials(rec) := ((((((_state_denials(rec) | request.record_deny(rec)) | consent.record_deny(rec)) | cases.record_deny(rec)) | rights.record_deny(rec)) | retention.record_deny(rec)) | breakglass.record_deny(rec)) | _custom_record_denials(rec)

# The record a single-customer request touches.
_single := {"customer_id": input.resource.customer_id, "enrichment": input.enrichment}

_single_denials := _record_denials(_single) if {
	object.get(input, "phase", "request") == "request"
	object.get(input.resource, "customer_id", "") != ""
} else := set()

_denials := _request_denials | _single_denials

# METADATA
# title: Allow
# description: True only when no request-level or record-level rule denies.
default allow := false

allow if count(_denials) == 0

_info := breakglass.info | minimization.info

_reasons := _denials if not allow

else := _info

_status := 200 if allow

else := s if {
	statuses := {r.status | some r in _denials}
	s := [x | some x in _status_rank; x in statuses][0]
} else := 403

_public(reasons) := sort([{"code": r.code, "message": r.message} | some r in reasons])

_allowed_fields := minimization.allowed

# A request bound to no customer (a list, an export, a search mapped as a read) returns whose
# data the response shows: each record is decided with its own customer's state.
_list_obligations contains {"type": "filter_records", "params": {}} if {
	input.action in {"list", "export", "read"}
	object.get(input.resource, "customer_id", "") == ""
}

# METADATA
# title: Records
# description: Per-record outcomes in the response phase of list routes, keyed by customer id.
records[rec.customer_id] := record_outcome(rec) if {
	input.phase == "response"
	some rec in input.records
}

# METADATA
# title: Record outcome
# description: |
#   The outcome of one record rec ({customer_id, enrichment}) of a list response: served with the
#   request's fields and key scopes when nothing denies it, else denied with every reason.
record_outcome(rec) := {"allow": true, "reasons": [], "fields": minimization.fields, "key_scopes": minimization.key_scopes} if {
	allow
	count(_record_denials(rec)) == 0
} else := {"allow": false, "reasons": _public(_record_denials(rec) | _denials)}

# METADATA
# title: Decision
# description: |
#   The decision document (see docs/decision.md). The common allowed request is decided by
#   consentry.fastpath from precomputed sections; every other request by the rules here. Both
#   give the same document (tests compare them).
decision := d if {
	not _custom_active
	d := fastpath.decision
} else := full_decision

# METADATA
# title: Full decision
# description: The decision document from every rule, whatever the request.
full_decision := {
	"allow": allow,
	"status": _status,
	"reasons": _public(_reasons),
	"fields": _fields,
	"key_scopes": _key_scopes,
	"obligations": [o | some o in (_breakglass_obligations | _list_obligations)],
	"headers": _headers,
	"flags": _flags,
	"records": records,
}

# Break-glass marks and obligates an access that happened: a denied request carries neither
# (its input, justification included, is in the decision log anyway).
_breakglass_obligations := breakglass.obligations if allow

else := set()

_flags := [f | some f in breakglass.flags] if allow

else := []

# A denied decision serves no field: each requested field is reported denied with its category
# (the decoder turns any outcome of a denied decision into deny), which needs only the
# catalogue, not the purpose's outcomes.
_fields := minimization.fields if allow

else := minimization.denied_fields

_key_scopes := [s | some s in minimization.key_scopes] if allow

else := []

_headers := {
	"x-consentry-purpose": input.purpose,
	"x-consentry-fields": concat(",", sort(_allowed_fields)),
} if allow

else := {}
