# METADATA
# title: Decision fast path
# description: |
#   The common request - an employee or service with exactly one role reads or writes one
#   customer's record, for a purpose that role may act for, with every check passing, or only
#   the customer's consent or only the case failing; or a customer acting on their own record -
#   decided from one precomputed section per purpose x role x MFA instead of evaluating every
#   rule.
#   The section holds everything that depends on the catalogue only: the actions the purpose
#   permits, whether consent and a case are needed, the field outcomes with the special
#   categories the caller may not see already withheld, key scopes, allowed fields and the
#   information reasons. Per request only the record checks (consent, case, retention, state)
#   run. The fast decision is defined only when it is, field for field, the decision the full
#   rules in package consentry give; any other request (a denial, break-glass, processors,
#   unknown fields, several roles) is left to them.
package consentry.fastpath

import data.consentry.cases
import data.consentry.minimization
import data.consentry.util

# METADATA
# title: Fast decision
# description: |
#   The decision document for the common allowed request and for a request denied only for
#   want of consent or only for its case; undefined for any other request.
#   The request phase decides one customer; the response phase of a list decides every record,
#   the common ones (all checks pass, or only consent is missing) from the section and any
#   other record by the full rules for that record (consentry.record_outcome).
decision := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some f, rs in s.info; known[f]; some r in rs}),
	"fields": known,
	"key_scopes": sort({k | some f, k in s.key_fields; known[f]}),
	"obligations": [],
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {},
} if {
	# One branch per (consent required, case required) of the section, so that each body holds
	# only the record checks the purpose needs. Request level: a well-formed employee or service
	# request (the section exists only for a catalogue purpose the role may act for), no
	# break-glass, an action the purpose permits (a key of s.writes), every requested field a
	# distinct catalogue field, and for a write (w = 1) every requested field allowed in full
	# (allowed holds requested fields only, so >= is ==). Record level: one customer in the request
	# phase, readable state, then consent and case as the section requires, then retention. A
	# missing id, customer id or case id fails its test here: the full rules then decide.
	# Neither consent nor a case.
	s := _sec
	s.consent_required == false
	s.case_required == false
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some f, rs in s.info; known[f]; some r in rs}),
	"fields": known,
	"key_scopes": sort({k | some f, k in s.key_fields; known[f]}),
	"obligations": [],
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {},
} if {
	# A case assigned to the caller for this customer.
	s := _sec
	s.consent_required == false
	s.case_required == true
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	input.case_id != ""
	cs := input.enrichment.case
	cs.status == "open"
	cs.customer_id == input.resource.customer_id
	input.subject.id in cs.assignees
	cases.purpose_ok(cs)
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some f, rs in s.info; known[f]; some r in rs}),
	"fields": known,
	"key_scopes": sort({k | some f, k in s.key_fields; known[f]}),
	"obligations": [],
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {},
} if {
	# A granted, unexpired consent for the purpose or a parent of it.
	s := _sec
	s.consent_required == true
	s.case_required == false
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	_consent_ok(input.enrichment.consents, s)
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some f, rs in s.info; known[f]; some r in rs}),
	"fields": known,
	"key_scopes": sort({k | some f, k in s.key_fields; known[f]}),
	"obligations": [],
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {},
} if {
	# Consent and case.
	s := _sec
	s.consent_required == true
	s.case_required == true
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	_consent_ok(input.enrichment.consents, s)
	input.case_id != ""
	cs := input.enrichment.case
	cs.status == "open"
	cs.customer_id == input.resource.customer_id
	input.subject.id in cs.assignees
	cases.purpose_ok(cs)
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": false,
	"status": 451,
	"reasons": _consent_denial(input.enrichment.consents, s),
	"fields": minimization.denied_fields,
	"key_scopes": [],
	"obligations": [],
	"headers": {},
	"flags": [],
	"records": {},
} if {
	# Denied for want of consent and for nothing else: the request passes every request-level
	# check (as in the branches above), the record's state, case and lifecycle pass, and no
	# granted, unexpired consent covers the purpose. The full rules then give exactly one
	# reason (withdrawn, else expired, else notice_outdated, else missing: consent.record_deny),
	# status 451 and the fields every denied decision reports; a request that fails anything
	# else as well is left to them.
	s := _sec
	s.consent_required == true
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	count(object.filter(s.fields, req)) == count(req)
	count(object.filter(s.allowed, req)) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	rec := {"customer_id": input.resource.customer_id, "enrichment": input.enrichment}
	not _record_consent_ok(rec, s)
	_record_case_ok(rec, s)
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": false,
	"status": 403,
	"reasons": sort([{"code": r.code, "message": r.message} | some r in cases.record_deny(rec)]),
	"fields": minimization.denied_fields,
	"key_scopes": [],
	"obligations": [],
	"headers": {},
	"flags": [],
	"records": {},
} if {
	# Denied for the case and for nothing else (no x-case-id, an unknown case, or one that is
	# closed, about another customer or not assigned to the caller): every other check passes,
	# consent included when the purpose needs it. The reasons are the case rules' own
	# (consentry.cases), all 403.
	s := _sec
	s.case_required == true
	object.get(input, "phase", "request") == "request"
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	count(object.filter(s.fields, req)) == count(req)
	count(object.filter(s.allowed, req)) >= w * count(req)
	input.resource.customer_id != ""
	count(object.get(input.enrichment, "errors", [])) == 0
	rec := {"customer_id": input.resource.customer_id, "enrichment": input.enrichment}
	not _record_case_ok(rec, s)
	_record_consent_ok(rec, s)
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some f, rs in s.info; known[f]; some r in rs}),
	"fields": known,
	"key_scopes": sort({k | some f, k in s.key_fields; known[f]}),
	"obligations": [],
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {},
} if {
	# A customer acting on their own record (principle 6) for a purpose that needs neither
	# consent nor a case, from the section of the catalogue role "customer" (the role the full
	# rules give every customer): the record checks are self, state and lifecycle.
	input.subject.type == "customer"
	s := _customer_sec
	s.consent_required == false
	s.case_required == false
	object.get(input, "phase", "request") == "request"
	input.subject.id != ""
	not input.break_glass
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	cid := input.resource.customer_id
	cid != ""
	object.get(input.subject, "customer_id", "") == cid
	count(object.get(input.enrichment, "errors", [])) == 0
	cust := input.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
} else := {
	"allow": true,
	"status": 200,
	"reasons": sort({r | some rs in object.filter(s.info, req); some r in rs}),
	"fields": known,
	"key_scopes": sort(scopes),
	"obligations": _list_obligations,
	"headers": {
		"x-consentry-purpose": input.purpose,
		"x-consentry-fields": concat(",", sort(object.keys(allowed))),
	},
	"flags": [],
	"records": {rec.customer_id: o |
		some rec in input.records
		o := _record(rec, s, served)
	},
} if {
	# The response phase of a list: the same request-level checks, then one outcome per record.
	# An action or purpose that needs one named customer and names none is left to the full
	# rules (request: resource.customer_missing).
	input.phase == "response"
	_case_known
	not data.consentry.request._customer_missing
	input.subject.type in {"employee", "service"}
	input.subject.id != ""
	not input.break_glass
	s := _sec
	w := s.writes[input.action]
	req := object.get(input.resource, "fields", [])
	known := object.filter(s.fields, req)
	count(known) == count(req)
	allowed := object.filter(s.allowed, req)
	count(allowed) >= w * count(req)
	scopes := {k | some k in object.filter(s.key_fields, req)}
	served := {"allow": true, "reasons": [], "fields": known, "key_scopes": scopes}
}

# A request that names a case names one consentry knows with its customer (else the full
# rules deny it: cases.deny, case.not_found).
_case_known if object.get(input, "case_id", "") == ""

_case_known if object.get(object.get(object.get(input, "enrichment", {}), "case", {}), "customer_id", "") != ""

# The per-record filtering obligation of a request bound to no customer, as the full rules
# give it.
_list_obligations := [{"type": "filter_records", "params": {}}] if {
	input.action in {"list", "export", "read"}
	object.get(input.resource, "customer_id", "") == ""
} else := []

# The outcome of one record in the response phase, given the section s and the outcome of a
# served record. A record whose state, case and lifecycle pass is served when its consent
# holds, and denied with the section's consent reason when consent is what fails; any other
# record (state errors, unknown, erased or expired customers, case problems) is decided by the
# full rules for that record. The checks that do not depend on consent run once per record.
_record(rec, s, served) := o if {
	object.get(rec.enrichment, "errors", []) == []
	_record_customer_ok(rec, s)
	_record_case_ok(rec, s)
	cust := rec.enrichment.customer
	not cust.erased == true
	not cust.erased_at
	_retained(cust)
	o := _record_by_consent(rec, s, served)
} else := data.consentry.record_outcome(rec)

# The outcome of a record whose state, case and lifecycle pass: served when consent holds,
# else (consent required and missing) denied with the section's consent reason.
_record_by_consent(rec, s, served) := served if {
	_record_consent_ok(rec, s)
} else := {"allow": false, "reasons": _consent_denial(rec.enrichment.consents, s)} if {
	s.consent_required
}

# A consent covers the purpose when given for it or for one of its parents: its purpose is in
# the section's covering set.
_record_consent_ok(_, s) if not s.consent_required

_record_consent_ok(rec, s) if _consent_ok(rec.enrichment.consents, s)

# A granted, unexpired consent in effect covers the purpose and no withdrawal covering the
# purpose takes it back (util.takes_back, util.in_effect, as in consent.rego).
_consent_ok(consents, s) if {
	some c in consents
	c.status == "granted"
	c.purpose in s.covering
	_unexpired(c)
	util.in_effect(c)
	util.notice_ok(c, s.notice)
	not _vetoed(c, consents, s)
}

_vetoed(g, consents, s) if {
	some w in consents
	w.purpose in s.covering
	util.takes_back(w, g)
}

# A purpose with customer_required serves the named customer's records only (else the full
# rules deny the record: request.record_deny).
_record_customer_ok(_, s) if not s.customer_required

_record_customer_ok(rec, _) if rec.customer_id == input.resource.customer_id

_record_case_ok(_, s) if not s.case_required

_record_case_ok(rec, _) if {
	input.case_id != ""
	c := rec.enrichment.case
	c.status == "open"
	c.customer_id == rec.customer_id
	input.subject.id in c.assignees
	cases.purpose_ok(c)
}

# The reasons (public form) the full rules give when no consent covers the purpose and
# nothing else denies the record: withdrawn before expired before an outdated notice before missing.
_consent_denial(consents, s) := s.consent_denials.withdrawn if {
	some c in consents
	util.withdrawn(c)
	c.purpose in s.covering
} else := s.consent_denials.expired if {
	some c in consents
	c.purpose in s.covering
	_expired(c)
} else := s.consent_denials.notice_outdated if {
	some c in consents
	c.status == "granted"
	c.purpose in s.covering
	not util.notice_ok(c, s.notice)
} else := s.consent_denials.missing

_expired(c) if c.status == "expired"

_expired(c) if {
	c.expires_at
	time.parse_rfc3339_ns(c.expires_at) <= input.time.now_ns
}

# The section of the declared purpose for the caller's single role and MFA state, read
# straight from the materialized sections when the engine provides them.
_sec := data.consentry.generated.fastpath_tables[input.purpose][r][m] if {
	[r] = input.subject.roles
	util.type_role_ok(r)
	input.time.now_ns > 0
	m := _mfa_key[object.get(input.subject, "mfa", false)]
} else := tables[input.purpose][r][m] if {
	not data.consentry.generated.fastpath_tables
	[r] = input.subject.roles
	util.type_role_ok(r)
	input.time.now_ns > 0
	m := _mfa_key[object.get(input.subject, "mfa", false)]
}

# The section of the declared purpose for a customer: the catalogue role "customer", which
# the full rules add to every customer's roles (util.roles), so only a customer whose token
# names no other role has it.
_customer_sec := data.consentry.generated.fastpath_tables[input.purpose].customer[m] if {
	object.get(input.subject, "roles", []) in {[], ["customer"]}
	input.time.now_ns > 0
	m := _mfa_key[object.get(input.subject, "mfa", false)]
} else := tables[input.purpose].customer[m] if {
	not data.consentry.generated.fastpath_tables
	object.get(input.subject, "roles", []) in {[], ["customer"]}
	input.time.now_ns > 0
	m := _mfa_key[object.get(input.subject, "mfa", false)]
}

# Section key of the MFA state: "true" exactly when input.subject.mfa == true (an MFA claim
# of another type has no section and is left to the full rules).
_mfa_key := {true: "true", false: "false"}

# Customer state c names a retention deadline that has not passed. A missing, null or
# malformed one is left to the full rules (retention.unset, retention.invalid), its shape
# checked first so that it is not a built-in error here.
_retained(c) if {
	util.timestamp_shape(c.retention_until)
	time.parse_rfc3339_ns(c.retention_until) > input.time.now_ns
}

_unexpired(c) if not c.expires_at

_unexpired(c) if time.parse_rfc3339_ns(c.expires_at) > input.time.now_ns

# METADATA
# title: Sections
# description: |
#   Per purpose, per role that may act for it, per MFA state ("true", "false") the section the
#   fast decision reads. Depends on the catalogue only: the engine evaluates it once when it
#   loads a policy and serves it from data.consentry.generated.fastpath_tables; plain
#   `opa test` computes it here.
tables := {p: _role_sections(p, pdef) | some p, pdef in util.catalog.purposes}

_role_sections(p, pdef) := {r: {"true": _section(p, pdef, r, true), "false": _section(p, pdef, r, false)} |
	some r, rdef in util.catalog.roles
	p in rdef.purposes
}

_section(p, pdef, r, mfa) := {
	# The actions the purpose permits, each with 1 if it is a write (create, update: only fields
	# allowed in full may be written) and 0 otherwise.
	"writes": {a: to_number(a in {"create", "update"}) |
		some a in pdef.actions
		a in data.consentry.request._actions
	},
	"consent_required": _flag(pdef, "consent_required"),
	"case_required": _flag(pdef, "case_required"),
	"fields": object.union(t.fields, object.filter(minimization.tables.denied, blocked)),
	"key_fields": object.remove(t.key_fields, blocked),
	"allowed": object.remove(t.allowed, blocked),
	"covering": util.covering(p),
	# The purpose's minimum privacy notice, if any ({} or {"min_notice_version": v}), for
	# util.notice_ok.
	"notice": object.filter(pdef, ["min_notice_version"]),
	"customer_required": _flag(pdef, "customer_required"),
	"consent_denials": {
		"withdrawn": [{"code": "consent.withdrawn", "message": sprintf("the customer withdrew consent for %q", [p])}],
		"expired": [{"code": "consent.expired", "message": sprintf("the customer's consent for %q has expired", [p])}],
		"notice_outdated": [{"code": "consent.notice_outdated", "message": _notice_message(p, pdef)}],
		"missing": [{"code": "consent.missing", "message": sprintf("the customer has not opted in to %q", [p])}],
	},
	"info": {f: rs |
		some f, _ in util.catalog.fields
		rs := _info(f, r, mfa)
		count(rs) > 0
	},
} if {
	t := minimization.tables.purposes[p]
	blocked := {f |
		some k, s in util.catalog.special_categories
		not _special_ok(s, r, mfa)
		some f, _ in minimization.tables.special_fields[k]
	}
}

# The consent.notice_outdated message; only a purpose with a minimum can give that reason.
_notice_message(p, pdef) := util.notice_outdated_message(p, pdef) if {
	"min_notice_version" in object.keys(pdef)
} else := ""

_flag(o, k) if o[k]

else := false

_special_ok(s, r, mfa) if {
	_mfa_ok(s, mfa)
	r in s.roles
}

_mfa_ok(s, _) if not s.require_mfa

_mfa_ok(_, mfa) if mfa

# The information reasons (public form) the full rules give for field f.
_info(f, r, mfa) := {{"code": "special_category.mfa_required", "message": m.mfa} |
	not mfa
	some k, s in util.catalog.special_categories
	s.require_mfa
	m := minimization.tables.special_fields[k][f]
} | {{"code": "special_category.role_required", "message": m.role} |
	some k, s in util.catalog.special_categories
	not r in s.roles
	m := minimization.tables.special_fields[k][f]
}
