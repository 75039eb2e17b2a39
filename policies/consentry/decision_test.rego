# METADATA
# title: Decision assembly tests
# description: The combined decision document - allow, status precedence, fields, key scopes, headers, list records.
package consentry_test

import data.consentry
import data.consentry.fixtures_test as fx

test_support_with_case_allowed if {
	d := consentry.decision with input as fx.support
	d.allow == true
	d.status == 200
	d.fields["contact.email"] == {"outcome": "allow", "category": "user.contact.email", "key_scope": "contact"}
	d.fields.date_of_birth.outcome == "mask"
	d.fields.date_of_birth.mask == "year"
	d.fields["payment.card_number"].outcome == "deny"
	d.key_scopes == ["contact", "identity"]
	d.headers["x-consentry-purpose"] == "essential.service.operations.support"
	d.headers["x-consentry-fields"] == "contact.email,id,name"
	d.obligations == []
	d.flags == []
}

test_default_deny_on_empty_input if {
	not consentry.allow with input as {}
}

test_denied_decision_releases_nothing if {
	d := consentry.decision with input as fx.replace(fx.support, {"case_id": ""})
	d.allow == false
	d.key_scopes == []
	d.headers == {}
	d.status == 403
	"case.missing" in fx.codes(d)
	count(d.fields) == count(fx.support.resource.fields)
	every _, f in d.fields {
		f.outcome == "deny"
		f.category
	}
}

test_status_precedence_401_over_403 if {
	d := consentry.decision with input as fx.replace(fx.support, {"subject": {}, "purpose": "nope"})
	d.status == 401
}

test_status_precedence_403_over_451 if {
	inp := fx.replace(fx.marketing, {
		"subject": {"id": "emp-1", "type": "employee", "roles": ["analyst"]},
		"enrichment": {"consents": [], "customer": fx.customer},
	})
	d := consentry.decision with input as inp
	d.status == 403
	"consent.missing" in fx.codes(d)
	"role.purpose_not_allowed" in fx.codes(d)
}

test_status_451_for_consent if {
	d := consentry.decision with input as fx.replace(fx.marketing, {"enrichment": {"consents": [], "customer": fx.customer}})
	d.status == 451
}

test_state_errors_deny_503 if {
	d := consentry.decision with input as fx.replace(fx.support, {"enrichment": {"errors": ["consent"]}})
	d.allow == false
	d.status == 503
	"state.unavailable" in fx.codes(d)
}

test_list_request_obligates_filtering if {
	inp := fx.replace(fx.marketing, {"action": "list", "resource": {"type": "customer", "customer_id": "", "fields": ["id", "contact.email"]}})
	d := consentry.decision with input as inp
	d.allow == true
	d.obligations == [{"type": "filter_records", "params": {}}]
}

test_response_phase_filters_records_by_consent if {
	inp := fx.replace(fx.marketing, {
		"action": "list",
		"phase": "response",
		"resource": {"type": "customer", "customer_id": "", "fields": ["id", "contact.email"]},
		"records": [
			{"customer_id": "c-1", "enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": fx.customer}},
			{"customer_id": "c-2", "enrichment": {"consents": [], "customer": object.union(fx.customer, {"id": "c-2"})}},
			{"customer_id": "c-3", "enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": {"id": "c-3", "erased": true}}},
		],
	})
	d := consentry.decision with input as inp
	d.allow == true
	d.records["c-1"].allow == true
	d.records["c-1"].key_scopes == {"contact"}
	d.records["c-2"].allow == false
	d.records["c-2"].reasons[0].code == "consent.missing"
	d.records["c-3"].allow == false
	d.records["c-3"].reasons[0].code == "customer.erased"
}

test_response_phase_denied_request_denies_every_record if {
	inp := fx.replace(fx.marketing, {
		"subject": {"id": "emp-1", "type": "employee", "roles": ["analyst"]},
		"action": "list",
		"phase": "response",
		"resource": {"type": "customer", "customer_id": "", "fields": ["id"]},
		"records": [{"customer_id": "c-1", "enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": fx.customer}}],
	})
	d := consentry.decision with input as inp
	d.allow == false
	d.records["c-1"].allow == false
}

test_reasons_carry_code_and_message_only if {
	d := consentry.decision with input as fx.replace(fx.support, {"case_id": ""})
	every r in d.reasons {
		object.keys(r) == {"code", "message"}
	}
}

test_type_bound_roles_from_a_token_grant_nothing if {
	# An employee whose token claims the customer role reads another customer's record.
	employee_as_customer := fx.replace(fx.self_read, {"subject": {"id": "emp-9", "type": "employee", "roles": ["customer"], "mfa": true}})
	not consentry.decision.allow with input as employee_as_customer
	not consentry.full_decision.allow with input as employee_as_customer

	# A service whose token claims the processor role, without an agreement.
	service_as_processor := fx.replace(fx.processor, {
		"subject": {"id": "svc-x", "type": "service", "roles": ["processor"]},
		"enrichment": {"consents": [fx.granted("third_party_sharing")], "customer": fx.customer},
	})
	not consentry.decision.allow with input as service_as_processor
	not consentry.full_decision.allow with input as service_as_processor
}

_custom_reason := {"code": "house.rule", "message": "a house rule", "status": 403}

test_custom_request_deny if {
	d := consentry.decision with input as fx.support with data.consentry.custom as {"house": {"deny": {_custom_reason}}}
	d.allow == false
	d.status == 403
	{"code": "house.rule", "message": "a house rule"} in d.reasons
}

test_custom_record_deny_single if {
	d := consentry.decision with input as fx.support with data.consentry.custom as {"house": {"record_deny": {"c-1": {_custom_reason}}}}
	d.allow == false
	{"code": "house.rule", "message": "a house rule"} in d.reasons
}

test_custom_record_deny_for_another_record_changes_nothing if {
	d := consentry.decision with input as fx.support with data.consentry.custom as {"house": {"record_deny": {"c-2": {_custom_reason}, "c-1": set()}}}
	d.allow == true
	d == consentry.decision with input as fx.support
}

test_custom_package_without_rules_changes_nothing if {
	d := consentry.decision with input as fx.support with data.consentry.custom as {"house": {"helper": 1}}
	d == consentry.decision with input as fx.support
}

test_custom_values_named_deny_are_not_rules if {
	# A helper's value or a data document that happens to hold a "deny" member below the
	# package level denies nothing: only the package's own deny is read.
	d := consentry.decision with input as fx.support with data.consentry.custom as {"house": {"purpose_rules": {"x": {"deny": true}}, "blocked": {"deny": {_custom_reason}}}}
	d.allow == true
}

test_custom_boolean_deny if {
	d := consentry.decision with input as fx.support with data.consentry.custom as {"acme": {"deny": true}}
	d.allow == false
	d.status == 403
	{"code": "custom.deny", "message": "denied by data.consentry.custom.acme"} in d.reasons
	a := consentry.decision with input as fx.support with data.consentry.custom as {"acme": {"deny": false}}
	a.allow == true
}

# A read bound to no customer (a search mapped as a read) is filtered record by record too.
test_unbound_read_obligates_filtering if {
	inp := fx.replace(fx.marketing, {"action": "read", "resource": {"type": "customer", "customer_id": "", "fields": ["id", "contact.email"]}})
	consentry.decision.obligations == [{"type": "filter_records", "params": {}}] with input as inp
	consentry.full_decision.obligations == [{"type": "filter_records", "params": {}}] with input as inp
}
