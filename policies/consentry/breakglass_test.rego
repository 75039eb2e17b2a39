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

# Holding one role that may break glass (support_lead) and another that may see health data
# (care_coordinator, on an assigned case only) does not add up to emergency access to Art. 9
# data: the special category is withheld, with its own reason.
test_break_glass_does_not_combine_roles_to_release_health if {
	inp := fx.replace(emergency, {
		"subject": {"id": "emp-2", "type": "employee", "roles": ["support_lead", "care_coordinator"], "mfa": true},
		"enrichment": {"consents": [], "customer": fx.customer},
	})
	d := consentry.decision with input as inp
	d.allow
	d.fields["health.notes"].outcome == "deny"
	not "health" in d.key_scopes
	"special_category.break_glass_role_required" in fx.codes(d)
	d.flags == ["break_glass"]
}

# The same caller on an assigned case without break-glass sees the health notes as before.
test_combined_roles_on_a_case_still_see_health if {
	inp := fx.replace(fx.support, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_lead", "care_coordinator"], "mfa": true}})
	d := consentry.decision with input as inp
	d.allow
	d.fields["health.notes"].outcome == "allow"
}

# A catalogue where one role may both break glass and see health data: the release is allowed
# and flagged on its own so that reviewers find Art. 9 emergency access.
_emergency_care_roles := object.union(data.consentry.catalog.roles, {"care_coordinator": object.union(data.consentry.catalog.roles.care_coordinator, {"break_glass": true})})

test_break_glass_special_category_release_is_flagged if {
	inp := fx.replace(emergency, {
		"subject": {"id": "emp-2", "type": "employee", "roles": ["care_coordinator"], "mfa": true},
		"enrichment": {"consents": [], "customer": fx.customer},
	})
	d := consentry.decision with input as inp with data.consentry.catalog.roles as _emergency_care_roles
	d.allow
	d.fields["health.notes"].outcome == "allow"
	d.flags == ["break_glass", "break_glass.special_category"]
	"break_glass.special_category" in fx.codes(d)

	# The full rules, with two roles (one of them the emergency care role), agree.
	two := fx.replace(inp, {"subject": {"id": "emp-2", "type": "employee", "roles": ["care_coordinator", "support_agent"], "mfa": true}})
	d2 := consentry.decision with input as two with data.consentry.catalog.roles as _emergency_care_roles
	d2.fields["health.notes"].outcome == "allow"
	"break_glass.special_category" in d2.flags
}

test_break_glass_without_special_category_release_has_one_flag if {
	inp := fx.replace(emergency, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "contact.email", "health.notes"]}})
	d := consentry.decision with input as inp with data.consentry.catalog.roles as _emergency_care_roles
	d.fields["health.notes"].outcome == "deny"
	d.flags == ["break_glass"]
}

# Break-glass is for one named customer: a search, a list or an export with it is denied.
test_break_glass_needs_a_named_customer if {
	inp := fx.replace(emergency, {"resource": {"type": "customer", "fields": ["id", "name", "contact.email"]}, "enrichment": {"consents": []}})
	d := consentry.decision with input as inp
	not d.allow
	fx.codes(d) == {"break_glass.customer_required"}
	d.flags == []
	d.obligations == [{"type": "filter_records", "params": {}}]
}

# A list or an export returns many records whatever customer id its route names: break-glass
# is denied for it outright, not filtered.
test_break_glass_list_or_export_naming_a_customer_denied if {
	dpo := {"id": "emp-9", "type": "employee", "roles": ["dpo"], "mfa": true}
	inp := fx.replace(emergency, {"subject": dpo, "purpose": "essential.legal", "action": "export", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name"]}})
	consentry.decision.allow with input as object.union(inp, {"action": "read"})
	d := consentry.decision with input as inp
	not d.allow
	fx.codes(d) == {"break_glass.customer_required"}
	d.flags == []
	l := consentry.decision with input as fx.replace(emergency, {"action": "list"}) with data.consentry.catalog.purposes["essential.service.operations.support"].actions as ["read", "list"]
	"break_glass.customer_required" in fx.codes(l)
}

_live(id) := {"customer_id": id, "enrichment": {"consents": [], "customer": object.union(fx.customer, {"id": id})}}

test_break_glass_does_not_open_a_whole_search if {
	inp := fx.replace(emergency, {
		"phase": "response",
		"resource": {"type": "customer", "fields": ["id", "name", "contact.email"]},
		"enrichment": {"consents": []},
		"records": [_live("c-1"), _live("c-2"), _live("c-3")],
	})
	d := consentry.decision with input as inp
	not d.allow
	every _, r in d.records {
		not r.allow
		"break_glass.customer_required" in {x.code | some x in r.reasons}
	}
}

# A response that names one customer but carries other customers' records serves the named
# customer's only.
test_break_glass_response_serves_the_named_customer_only if {
	inp := fx.replace(emergency, {"phase": "response", "records": [_live("c-1"), _live("c-2")]})
	d := consentry.decision with input as inp
	d.allow
	d.records["c-1"].allow
	not d.records["c-2"].allow
	d.records["c-2"].reasons == [{"code": "break_glass.customer_required", "message": "break-glass access opens the named customer's record only, not customer \"c-2\"'s"}]
}

# A denied request is no emergency access: no flag, no obligation.
test_denied_break_glass_is_not_flagged if {
	inp := fx.replace(emergency, {"enrichment": {"consents": [], "customer": {"id": "c-1", "erased": true}}})
	breakglass.active with input as inp
	d := consentry.decision with input as inp
	not d.allow
	d.flags == []
	d.obligations == []
}

# A processor's token listing an employee role that may break glass grants nothing.
test_processor_cannot_break_glass_with_an_employee_role if {
	inp := fx.replace(emergency, {"subject": {"id": "svc-mail", "type": "processor", "processor_id": "p-mail", "roles": ["support_lead"]}})
	not breakglass.active with input as inp
	d := consentry.decision with input as inp
	not d.allow
	"break_glass.not_permitted" in fx.codes(d)
}
