# METADATA
# title: Case binding tests
# description: Allow and deny cases for consentry.cases.
package consentry.cases_test

import data.consentry.cases
import data.consentry.fixtures_test as fx

case_ := {"id": "case-7", "customer_id": "c-1", "assignees": ["emp-17"], "status": "open"}

codes(inp, c) := x if {
	x := {r.code | some r in cases.record_deny({"customer_id": "c-1", "enrichment": {"consents": [], "case": c}})} with input as inp
}

codes_nocase(inp) := x if {
	x := {r.code | some r in cases.record_deny({"customer_id": "c-1", "enrichment": {"consents": []}})} with input as inp
}

test_assigned_open_case_allows if {
	count(codes(fx.support, case_)) == 0
}

test_case_id_missing if {
	codes(fx.replace(fx.support, {"case_id": ""}), case_) == {"case.missing"}
}

test_case_not_found if {
	codes_nocase(fx.support) == {"case.not_found"}
}

test_case_closed if {
	codes(fx.support, object.union(case_, {"status": "closed"})) == {"case.closed"}
}

test_case_for_other_customer if {
	codes(fx.support, object.union(case_, {"customer_id": "c-2"})) == {"case.customer_mismatch"}
}

test_case_not_assigned if {
	codes(fx.support, object.union(case_, {"assignees": ["emp-99"]})) == {"case.not_assigned"}
}

test_all_problems_reported if {
	codes(fx.support, {"id": "case-7", "customer_id": "c-9", "assignees": [], "status": "closed"}) == {"case.closed", "case.customer_mismatch", "case.not_assigned"}
}

test_not_required_for_marketing if {
	count(codes_nocase(fx.marketing)) == 0
}

test_break_glass_skips_case if {
	inp := fx.replace(fx.support, {"subject": {"id": "emp-2", "type": "employee", "roles": ["support_lead"]}, "break_glass": {"justification": "customer reports fraud on the phone now"}})
	count(codes_nocase(inp)) == 0
}

test_unpermitted_break_glass_does_not_skip if {
	inp := fx.replace(fx.support, {"break_glass": {"justification": "customer reports fraud on the phone now"}})
	codes_nocase(inp) == {"case.not_found"}
}

# A case route (the customer comes from the case) whose case consentry does not know.
case_route(c) := x if {
	x := case_route_enr({"consents": [], "case": c})
}

case_route_enr(enrichment) := x if {
	inp := fx.replace(fx.support, {"resource": {"type": "case", "customer_id": "", "fields": []}, "enrichment": enrichment})
	x := {r.code | some r in cases.deny} with input as inp
}

test_case_route_unknown_case if {
	case_route_enr({"consents": []}) == {"case.not_found"}
}

test_case_route_case_without_customer if {
	case_route(object.remove(case_, ["customer_id"])) == {"case.not_found"}
	case_route(object.union(case_, {"customer_id": ""})) == {"case.not_found"}
}

test_case_route_known_case_is_decided_per_record if {
	count(case_route(case_)) == 0
}

test_no_case_named_no_request_denial if {
	denials := cases.deny with input as fx.replace(fx.marketing, {"case_id": "", "resource": {"type": "customer", "customer_id": "", "fields": []}})
	count(denials) == 0
}

test_unknown_case_denies_the_decision if {
	inp := fx.replace(fx.support, {"resource": {"type": "case", "customer_id": "", "fields": []}, "enrichment": {"consents": []}})
	d := data.consentry.decision with input as inp
	not d.allow
	"case.not_found" in fx.codes(d)
}

test_unknown_case_denies_even_with_break_glass if {
	inp := fx.replace(fx.support, {
		"subject": {"id": "emp-2", "type": "employee", "roles": ["support_lead"]},
		"break_glass": {"justification": "customer reports fraud on the phone now"},
		"resource": {"type": "case", "customer_id": "", "fields": []},
		"enrichment": {"consents": []},
	})
	d := data.consentry.decision with input as inp
	not d.allow
	"case.not_found" in fx.codes(d)
}

test_case_for_another_purpose if {
	codes(fx.support, object.union(case_, {"purpose": "essential.service.payment_processing"})) == {"case.purpose_mismatch"}
}

test_case_for_the_purpose_or_a_parent if {
	count(codes(fx.support, object.union(case_, {"purpose": "essential.service.operations.support"}))) == 0
	count(codes(fx.support, object.union(case_, {"purpose": "essential.service"}))) == 0
	count(codes(fx.support, object.union(case_, {"purpose": ""}))) == 0
}

test_case_for_a_child_purpose_does_not_serve_the_parent if {
	codes(fx.support, object.union(case_, {"purpose": "essential.service.operations.support.priority"})) == {"case.purpose_mismatch"}
}

test_case_purpose_mismatch_denies_the_decision_on_both_paths if {
	inp := fx.replace(fx.support, {"enrichment": object.union(fx.support.enrichment, {"case": object.union(fx.support.enrichment.case, {"purpose": "essential.service.payment_processing"})})})
	d := data.consentry.decision with input as inp
	not d.allow
	"case.purpose_mismatch" in fx.codes(d)
	d == data.consentry.full_decision with input as inp
}

# A case record missing its customer, status or id (bundle data, a partial import) is no open
# case about this customer: its problems are still reported.
test_partial_case_record_is_not_a_good_one if {
	codes(fx.support, object.remove(case_, ["customer_id"])) == {"case.customer_mismatch"}
	codes(fx.support, object.remove(case_, ["status"])) == {"case.closed"}
	codes(fx.support, object.remove(case_, ["assignees"])) == {"case.not_assigned"}
	codes(fx.support, object.remove(object.union(case_, {"status": "closed"}), ["id"])) == {"case.closed"}
}
