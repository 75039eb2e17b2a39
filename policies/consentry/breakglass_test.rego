# METADATA
# title: Break-glass tests
# description: Allow and deny cases for consentry.breakglass.
package consentry.breakglass_test

import data.consentry
import data.consentry.breakglass
import data.consentry.fixtures_test as fx

lead := {"id": "emp-2", "type": "employee", "roles": ["support_lead"]}

emergency := fx.replace(fx.support, {"subject": lead, "case_id": "", "break_glass": {"justification": "caller threatens self-harm, need contact now"}})

test_break_glass_allows_without_case_and_is_flagged if {
	d := consentry.decision with input as emergency
	d.allow
	d.flags == ["break_glass"]
	d.obligations == [{"type": "record_justification", "params": {"justification": "caller threatens self-harm, need contact now"}}]
	"break_glass.used" in {r.code | some r in d.reasons}
}

test_not_active_without_request if {
	not breakglass.active with input as fx.replace(fx.support, {"subject": lead})
}

test_break_glass_role_must_act_for_the_purpose if {
	# The dpo may use break-glass, for the legal purpose only: not to skip a support case.
	inp := fx.replace(emergency, {"subject": {"id": "emp-3", "type": "employee", "roles": ["support_agent", "dpo"]}})
	not breakglass.active with input as inp
	d := consentry.decision with input as inp
	not d.allow
	"break_glass.not_permitted" in {r.code | some r in d.reasons}
}

test_role_not_permitted if {
	d := consentry.decision with input as fx.replace(emergency, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent"]}})
	not d.allow
	"break_glass.not_permitted" in {r.code | some r in d.reasons}
}

test_short_justification_denied if {
	d := consentry.decision with input as fx.replace(emergency, {"break_glass": {"justification": "   urgent  "}})
	not d.allow
	d.status == 400
	"break_glass.justification_missing" in {r.code | some r in d.reasons}
}

test_break_glass_does_not_override_erasure if {
	inp := fx.replace(emergency, {"enrichment": {"consents": [], "customer": {"id": "c-1", "erased": true}}})
	d := consentry.decision with input as inp
	not d.allow
	"customer.erased" in {r.code | some r in d.reasons}
}

test_break_glass_does_not_override_consent if {
	inp := fx.replace(fx.marketing, {"subject": {"id": "dpo-1", "type": "employee", "roles": ["dpo", "marketing"]}, "break_glass": {"justification": "campaign deadline is today, please"}, "enrichment": {"consents": [], "customer": fx.customer}})
	d := consentry.decision with input as inp
	not d.allow
	"consent.missing" in {r.code | some r in d.reasons}
}
