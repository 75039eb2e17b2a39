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
