# METADATA
# title: Fast path tests
# description: |
#   The fast decision is defined only for the common allowed request and is then exactly the
#   full decision; the sections served from data give the same decisions as computed ones.
package consentry.fastpath_test

import data.consentry
import data.consentry.fastpath
import data.consentry.fixtures_test as fx
import data.consentry.minimization

_billing := fx.replace(fx.support, {
	"subject": {"id": "emp-50", "type": "employee", "roles": ["billing_agent"], "mfa": true},
	"purpose": "essential.service.payment_processing",
	"case_id": "",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "payment.card_number", "health.notes"]},
})

_expiring(p, ts) := object.union(fx.granted(p), {"expires_at": ts})

_with_consents(base, cs) := fx.replace(base, {"enrichment": object.union(base.enrichment, {"consents": cs})})

_rec(id, consents, cust) := {"customer_id": id, "enrichment": {"consents": consents, "customer": object.union(fx.customer, object.union({"id": id}, cust))}}

_withdrawn(p) := object.union(fx.granted(p), {"status": "withdrawn"})

_with_case(base, change) := fx.replace(base, {"enrichment": object.union(base.enrichment, {"case": object.union(base.enrichment.case, change)})})

# The response phase of a marketing list: one record per kind of outcome.
_list := fx.replace(fx.marketing, {
	"action": "list",
	"phase": "response",
	"resource": {"type": "customer", "customer_id": "", "fields": ["id", "contact.email", "payment.card_number"]},
	"records": [
		_rec("c-1", [fx.granted("marketing.communications.email")], {}),
		_rec("c-2", [_withdrawn("marketing.communications.email"), fx.granted("analytics.reporting")], {}),
		_rec("c-3", [], {}),
		_rec("c-4", [_expiring("marketing.communications.email", "2026-01-01T00:00:00Z")], {}),
		_rec("c-5", [object.union(fx.granted("marketing"), {"status": "expired"})], {}),
		_rec("c-6", [_expiring("marketing", "2027-01-01T00:00:00Z")], {}),
		_rec("c-7", [fx.granted("marketing.communications.email")], {"erased": true}),
		_rec("c-8", [fx.granted("marketing.communications.email")], {"retention_until": "2020-01-01T00:00:00Z"}),
		{"customer_id": "c-9", "enrichment": {"consents": [], "customer": fx.customer, "errors": ["consent"]}},
		{"customer_id": "c-10", "enrichment": {"consents": [fx.granted("marketing.communications.email")]}},
		_rec("c-11", [fx.granted("marketing.communications.email")], {"erased_at": "2026-10-01T00:00:00Z"}),
		{"customer_id": "c-12", "enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": {"id": "c-12", "erased": false}}},
	],
})

# The response phase of a support list: the case is checked for each record.
_support_list := fx.replace(fx.support, {"phase": "response", "records": [
	{"customer_id": "c-1", "enrichment": {"consents": [], "customer": fx.customer, "case": fx.support.enrichment.case}},
	{"customer_id": "c-2", "enrichment": {"consents": [], "customer": fx.customer, "case": fx.support.enrichment.case}},
	_rec("c-3", [], {}),
]})

# Inputs the fast path decides.
_fast_inputs := [
	fx.support,
	fx.replace(fx.support, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent"], "mfa": true}}),
	fx.replace(fx.support, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email"]}}),
	fx.marketing,
	_with_consents(fx.marketing, [_expiring("marketing.communications.email", "2027-01-01T00:00:00Z")]),
	_with_consents(fx.marketing, [fx.granted("marketing")]),
	# Denied for want of consent only: expired, withdrawn, never given, given for another purpose.
	_with_consents(fx.marketing, [_expiring("marketing.communications.email", "2026-01-01T00:00:00Z")]),
	_with_consents(fx.marketing, [object.union(fx.granted("marketing.communications.email"), {"status": "withdrawn"})]),
	_with_consents(fx.marketing, [object.union(fx.granted("marketing"), {"status": "expired"})]),
	_with_consents(fx.marketing, []),
	_with_consents(fx.marketing, [fx.granted("analytics.reporting")]),
	# Denied for the case only: none named, unknown, closed, about another customer, not the
	# caller's, and all three problems at once.
	fx.replace(fx.support, {"case_id": ""}),
	fx.replace(fx.support, {"enrichment": object.remove(fx.support.enrichment, ["case"])}),
	_with_case(fx.support, {"status": "closed"}),
	_with_case(fx.support, {"customer_id": "c-2"}),
	_with_case(fx.support, {"assignees": ["emp-99"]}),
	_with_case(fx.support, {"status": "closed", "customer_id": "c-2", "assignees": []}),
	_billing,
	fx.replace(_billing, {"subject": {"id": "emp-50", "type": "employee", "roles": ["billing_agent"]}}),
	_list,
	fx.replace(_list, {"records": []}),
	fx.replace(_list, {"action": "read", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["id"]}}),
	_support_list,
	fx.self_read,
	fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer", "customer_id": "c-1", "roles": ["customer"]}}),
	fx.replace(fx.self_read, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email"]}}),
	fx.replace(fx.self_read, {"action": "access_report", "resource": {"type": "customer", "customer_id": "c-1", "fields": []}}),
]

# Inputs the full rules decide: each breaks one fast-path condition.
_full_inputs := [
	fx.replace(fx.self_read, {"resource": {"type": "customer", "customer_id": "c-2", "fields": ["id", "name"]}}),
	fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer"}}),
	fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer", "customer_id": "c-1", "roles": ["customer", "marketing"]}}),
	fx.replace(fx.self_read, {"break_glass": {"justification": "customer says it is an emergency"}}),
	fx.replace(fx.self_read, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["payment.card_number"]}}),
	fx.replace(fx.self_read, {"enrichment": {"consents": [], "customer": object.union(fx.customer, {"erased": true})}}),
	fx.replace(fx.self_read, {"purpose": "marketing.communications.email"}),
	fx.processor,
	fx.replace(fx.support, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent", "support_lead"]}}),
	fx.replace(fx.support, {"break_glass": {"justification": "customer on the phone, case system down"}}),
	# A case problem and something else too: erased, a write the purpose may not make.
	fx.replace(fx.support, {"case_id": "", "enrichment": object.union(fx.support.enrichment, {"customer": object.union(fx.customer, {"erased": true})})}),
	fx.replace(_with_case(fx.support, {"status": "closed"}), {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["date_of_birth"]}}),
	fx.replace(fx.support, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["date_of_birth"]}}),
	fx.replace(fx.support, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "ssn"]}}),
	fx.replace(fx.support, {"resource": {"type": "customer", "customer_id": "", "fields": ["id"]}, "action": "list"}),
	fx.replace(fx.support, {"purpose": "marketing.communications.email"}),
	fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": object.union(fx.customer, {"erased": true})}}),
	# Consent missing and something else too: erased, past retention, state unreadable, a write
	# of a field the purpose may not write, break-glass, another role.
	fx.replace(fx.marketing, {"enrichment": {"consents": [], "customer": object.union(fx.customer, {"erased": true})}}),
	fx.replace(fx.marketing, {"enrichment": {"consents": [], "customer": object.union(fx.customer, {"retention_until": "2020-01-01T00:00:00Z"})}}),
	fx.replace(fx.marketing, {"enrichment": {"consents": [], "customer": fx.customer, "errors": ["consent store down"]}}),
	fx.replace(fx.marketing, {"enrichment": {"consents": []}}),
	_with_consents(fx.replace(fx.marketing, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["payment.card_number"]}}), []),
	_with_consents(fx.replace(fx.marketing, {"break_glass": {"justification": "regulator asked"}}), []),
	_with_consents(fx.replace(fx.marketing, {"subject": {"id": "emp-30", "type": "employee", "roles": ["marketing", "analyst"]}}), []),
	_with_consents(fx.replace(fx.marketing, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "ssn"]}}), []),
	fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": fx.customer, "errors": ["consent store down"]}}),
	fx.replace(_list, {"subject": {"id": "emp-1", "type": "employee", "roles": ["analyst"]}}),
	fx.replace(_list, {"break_glass": {"justification": "campaign audit, consent store suspected wrong"}}),
	fx.replace(_list, {"phase": "later"}),
	# An erasure time without the erased flag, no retention deadline: the full rules deny.
	fx.replace(fx.support, {"enrichment": object.union(fx.support.enrichment, {"customer": object.union(fx.customer, {"erased_at": "2026-10-01T00:00:00Z"})})}),
	fx.replace(fx.support, {"enrichment": fx.replace(fx.support.enrichment, {"customer": {"id": "c-1", "erased": false}})}),
	fx.replace(fx.self_read, {"enrichment": {"consents": [], "customer": object.union(fx.customer, {"erased_at": "2026-10-01T00:00:00Z"})}}),
	_with_consents(fx.replace(fx.marketing, {"enrichment": {"consents": [], "customer": {"id": "c-1", "erased": false}}}), []),
	# A write in the response phase that names no customer (resource.customer_missing).
	fx.replace(_support_list, {"action": "update", "resource": {"type": "customer", "fields": ["contact.email"]}}),
	# A processor or a customer listing employee roles.
	fx.replace(fx.support, {"subject": {"id": "svc-1", "type": "processor", "processor_id": "p-mail", "roles": ["support_agent"]}}),
]

# The loops below serve the tables as the engine does (computed once here), so that each input
# does not recompute every section; test_materialized_sections_give_same_decisions shows that
# served and computed tables decide alike.
test_fast_path_decides_common_requests if {
	t := fastpath.tables
	mt := minimization.tables
	every inp in _fast_inputs {
		fastpath.decision with input as inp
			with data.consentry.generated.fastpath_tables as t
			with data.consentry.generated.minimization_tables as mt
	}
}

test_full_rules_decide_the_rest if {
	t := fastpath.tables
	mt := minimization.tables
	every inp in _full_inputs {
		not fastpath.decision with input as inp
			with data.consentry.generated.fastpath_tables as t
			with data.consentry.generated.minimization_tables as mt
	}
}

test_fast_decision_is_full_decision if {
	t := fastpath.tables
	mt := minimization.tables
	every inp in array.concat(_fast_inputs, _full_inputs) {
		d := consentry.decision with input as inp
			with data.consentry.generated.fastpath_tables as t
			with data.consentry.generated.minimization_tables as mt
		d == consentry.full_decision with input as inp
			with data.consentry.generated.fastpath_tables as t
			with data.consentry.generated.minimization_tables as mt
	}
}

# The engine serves the sections from data.consentry.generated (evaluated once per policy
# load); decisions must not depend on where they come from.
test_materialized_sections_give_same_decisions if {
	t := fastpath.tables

	# One input per kind of branch (computing every section per input is slow under plain OPA):
	# consent, case, billing with MFA, a list's response phase, a customer's own record.
	every i in [0, 3, 6, 8, 12] {
		inp := _fast_inputs[i]
		computed := fastpath.decision with input as inp
		served := fastpath.decision with input as inp with data.consentry.generated.fastpath_tables as t
		computed == served
	}
}

test_sections_withhold_special_categories if {
	s := fastpath.tables["essential.service.payment_processing"].billing_agent
	s["true"].fields["payment.card_number"].outcome == "mask"
	s["false"].fields["payment.card_number"].outcome == "deny"
	s["true"].fields["health.notes"].outcome == "deny"
	count(s["false"].info["payment.card_number"]) == 1
	count(s["true"].info["health.notes"]) == 1
	count(s["false"].info["health.notes"]) == 2
	not s["true"].info["payment.card_number"]
}

test_sections_only_for_permitted_roles if {
	not fastpath.tables["essential.service.payment_processing"].support_agent
	fastpath.tables["essential.service.operations.support"].support_agent["false"].case_required == true
	fastpath.tables["marketing.communications.email"].marketing["false"].consent_required == true
}

test_special_category_without_mfa_needs_role_only if {
	cats := {"user.financial": {"title": "Payment data", "require_mfa": false, "roles": ["billing_agent"]}}
	s := fastpath.tables["essential.service.payment_processing"].billing_agent with data.consentry.catalog.special_categories as cats
	s["false"].fields["payment.card_number"] == {"outcome": "mask", "mask": "last4", "category": "user.financial.credit_card", "key_scope": "financial"}
	not s["false"].info["payment.card_number"]
}

test_list_records_decided_per_record if {
	d := fastpath.decision with input as _list
	d.obligations == [{"type": "filter_records", "params": {}}]
	{id | some id, r in d.records; r.allow} == {"c-1", "c-6"}
	d.records["c-2"].reasons[0].code == "consent.withdrawn"
	d.records["c-3"].reasons[0].code == "consent.missing"
	d.records["c-4"].reasons[0].code == "consent.expired"
	d.records["c-5"].reasons[0].code == "consent.expired"
	d.records["c-7"].reasons[0].code == "customer.erased"
	d.records["c-8"].reasons[0].code == "retention.expired"
	"state.unavailable" in {r.code | some r in d.records["c-9"].reasons}
	d.records["c-10"].reasons[0].code == "customer.unknown"
	d.records["c-11"].reasons[0].code == "customer.erased"
	d.records["c-12"].reasons[0].code == "retention.unset"
	d.records["c-1"].key_scopes == {"contact"}
}

test_response_phase_case_work_checks_each_record if {
	d := fastpath.decision with input as _support_list
	d.records["c-1"].allow
	d.records["c-2"].reasons[0].code == "case.customer_mismatch"
	d.records["c-3"].reasons[0].code == "case.not_found"
}

test_sections_know_covering_purposes_and_consent_reasons if {
	s := fastpath.tables["marketing.communications.email"].marketing["false"]
	s.covering == {"marketing", "marketing.communications", "marketing.communications.email"}
	s.consent_denials.withdrawn == [{"code": "consent.withdrawn", "message": "the customer withdrew consent for \"marketing.communications.email\""}]
}

# A purpose that needs both consent and a case (none in the shipped catalogue) has its own
# branch of the fast decision: decided there when both hold, left to the full rules otherwise.
_both_catalog := object.union(data.consentry.catalog, {"purposes": {"essential.service.operations.support": object.union(
	data.consentry.catalog.purposes["essential.service.operations.support"],
	{"consent_required": true},
)}})

test_consent_and_case_branch if {
	ok := _with_consents(fx.support, [fx.granted("essential.service")])
	d := fastpath.decision with input as ok with data.consentry.catalog as _both_catalog
	d == consentry.full_decision with input as ok with data.consentry.catalog as _both_catalog
	d.allow

	# The case closed with consent in order: the case denial branch, as the full rules.
	no_case := _with_case(ok, {"status": "closed"})
	cd := fastpath.decision with input as no_case with data.consentry.catalog as _both_catalog
	cd == consentry.full_decision with input as no_case with data.consentry.catalog as _both_catalog
	cd.reasons[0].code == "case.closed"

	# Consent missing with the case in order: the consent denial branch, as the full rules.
	no_consent := _with_consents(fx.support, [])
	nd := fastpath.decision with input as no_consent with data.consentry.catalog as _both_catalog
	nd == consentry.full_decision with input as no_consent with data.consentry.catalog as _both_catalog
	nd.reasons[0].code == "consent.missing"

	# Consent missing and the case closed: two reasons, left to the full rules.
	neither := _with_consents(no_case, [])
	not fastpath.decision with input as neither with data.consentry.catalog as _both_catalog
}

# The response phase of a list that names a case consentry does not know is denied on both
# paths (cases.deny), not served record by record.
test_list_response_with_unknown_case_is_the_full_decision if {
	inp := fx.replace(fx.marketing, {
		"phase": "response", "action": "list", "case_id": "case-404",
		"resource": {"type": "customer", "customer_id": "", "fields": ["id", "contact.email"]}, "enrichment": {"consents": []},
		"records": [{"customer_id": "c-1", "enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": fx.customer}}],
	})
	consentry.decision == consentry.full_decision with input as inp
	not consentry.decision.allow with input as inp
}

# A purpose with customer_required: in the response phase the fast path serves the named
# customer's record and leaves another customer's to the full rules, which deny it.
test_customer_required_response_phase_is_the_full_decision if {
	k := "essential.service.payment_processing"
	ps := fx.replace(data.consentry.catalog.purposes, {k: object.union(data.consentry.catalog.purposes[k], {"customer_required": true})})
	cat := fx.replace(data.consentry.catalog, {"purposes": ps})
	inp := fx.replace(_billing, {"phase": "response", "records": [_rec("c-1", [], {}), _rec("c-2", [], {})]})
	d := fastpath.decision with input as inp with data.consentry.catalog as cat
	d == consentry.full_decision with input as inp with data.consentry.catalog as cat
	d.records["c-1"].allow
	[r] := d.records["c-2"].reasons
	r.code == "resource.other_customer"
}
