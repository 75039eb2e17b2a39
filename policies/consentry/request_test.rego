# METADATA
# title: Purpose and role tests
# description: Allow and deny cases for every rule of consentry.request.
package consentry.request_test

import data.consentry
import data.consentry.fixtures_test as fx
import data.consentry.request

codes(inp) := {r.code | some r in request.deny with input as inp}

test_known_purpose_and_role_allowed if {
	count(codes(fx.support)) == 0
}

test_unauthenticated_missing_type if {
	"subject.unauthenticated" in codes(fx.replace(fx.support, {"subject": {}}))
}

test_unauthenticated_empty_type if {
	"subject.unauthenticated" in codes(fx.replace(fx.support, {"subject": {"type": "", "id": "x"}}))
}

test_unknown_subject_type if {
	"subject.type_unknown" in codes(fx.replace(fx.support, {"subject": {"type": "robot", "id": "r2"}}))
}

test_subject_id_missing if {
	"subject.id_missing" in codes(fx.replace(fx.support, {"subject": {"type": "employee", "roles": ["support_agent"]}}))
}

test_unknown_action if {
	"action.unknown" in codes(fx.replace(fx.support, {"action": "teleport"}))
}

test_every_known_action_is_known if {
	every a in ["read", "list", "create", "update", "delete", "export", "erase", "access_report"] {
		not "action.unknown" in codes(fx.replace(fx.support, {"action": a}))
	}
}

test_missing_purpose if {
	"purpose.missing" in codes(fx.replace(fx.support, {"purpose": ""}))
}

test_unknown_purpose if {
	c := codes(fx.replace(fx.support, {"purpose": "marketing.telepathy"}))
	"purpose.unknown" in c
	not "role.purpose_not_allowed" in c
}

test_role_not_allowed_for_purpose if {
	"role.purpose_not_allowed" in codes(fx.replace(fx.support, {"subject": {"id": "emp-40", "type": "employee", "roles": ["marketing"]}}))
}

test_customer_type_grants_customer_role if {
	not "role.purpose_not_allowed" in codes(fx.self_read)
}

test_action_not_allowed_for_purpose if {
	"purpose.action_not_allowed" in codes(fx.replace(fx.marketing, {"action": "update"}))
}

test_delete_never_allowed_for_support if {
	d := consentry.decision with input as fx.replace(fx.support, {"action": "delete"})
	not d.allow
	d.status == 403
}

test_decision_time_missing_denies if {
	no_time := object.remove(fx.marketing, ["time"])
	codes(no_time) == {"time.missing"}
	zero_time := fx.replace(fx.marketing, {"time": {"now": "", "now_ns": 0}})
	codes(zero_time) == {"time.missing"}
	every inp in [no_time, zero_time] {
		d := consentry.decision with input as inp
		not d.allow
		d.status == 503
		not consentry.full_decision.allow with input as inp
	}
}

test_purpose_key_missing_denies if {
	"purpose.missing" in codes(object.remove(fx.support, ["purpose"]))
	not consentry.decision.allow with input as object.remove(fx.support, ["purpose"])
}

test_unknown_phase_denies if {
	inp := fx.replace(fx.support, {"phase": "Response"})
	codes(inp) == {"phase.unknown"}
	not consentry.decision.allow with input as inp
	not consentry.full_decision.allow with input as inp
}

# A change to one customer's data, or a question about it, on a route that names no customer
# would run no record check (consent, case, rights, erasure, retention): denied.
test_customer_actions_need_a_customer if {
	every action in ["update", "delete", "erase", "access_report"] {
		inp := fx.replace(fx.support, {"action": action, "resource": {"type": "customer", "fields": []}})
		"resource.customer_missing" in codes(inp)
	}
}

test_update_without_customer_is_denied if {
	inp := fx.replace(fx.support, {
		"case_id": "", "action": "update",
		"resource": {"type": "customer", "fields": ["contact.email", "notes"]},
		"enrichment": {"consents": []},
	})
	d := consentry.decision with input as inp
	not d.allow
	fx.codes(d) == {"resource.customer_missing"}
	d.status == 403
}

test_erase_without_customer_is_denied if {
	inp := fx.replace(fx.support, {
		"subject": {"id": "emp-5", "type": "employee", "roles": ["dpo"]},
		"purpose": "essential.legal", "case_id": "", "action": "erase",
		"resource": {"type": "customer", "fields": []},
		"enrichment": {"consents": []},
	})
	d := consentry.decision with input as inp
	not d.allow
	"resource.customer_missing" in fx.codes(d)
}

# A create names no customer yet; reads, lists and exports without one are filtered per record.
test_create_read_list_export_need_no_customer if {
	count(codes(fx.replace(fx.support, {"action": "create", "resource": {"type": "customer", "fields": ["name"]}}))) == 0
	every action in ["read", "list", "export"] {
		not "resource.customer_missing" in codes(fx.replace(fx.marketing, {"action": action, "resource": {"type": "customer", "fields": ["id"]}}))
	}
	d := consentry.decision with input as fx.replace(fx.marketing, {"action": "list", "resource": {"type": "customer", "fields": ["id"]}, "enrichment": {"consents": []}})
	d.allow
	d.obligations == [{"type": "filter_records", "params": {}}]
}

# A purpose marked customer_required serves one named customer per request, whatever the action.
test_customer_required_purpose_needs_a_customer if {
	inp := fx.replace(fx.processor, {"purpose": "essential.service.payment_processing.charge", "resource": {"type": "customer", "fields": ["payment.card_number"]}})
	"resource.customer_missing" in codes(inp)
	not "resource.customer_missing" in codes(fx.replace(inp, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["payment.card_number"]}}))
	not "resource.customer_missing" in codes(fx.replace(inp, {"action": "create"}))
}
