# METADATA
# title: Minimization and special category tests
# description: Allow, mask and deny cases for consentry.minimization.
package consentry.minimization_test

import data.consentry
import data.consentry.fastpath
import data.consentry.fixtures_test as fx
import data.consentry.minimization

fields(inp) := x if {
	x := minimization.fields with input as inp
}

test_allowed_category if {
	fields(fx.support)["contact.email"].outcome == "allow"
}

test_masked_category_year if {
	fields(fx.support).date_of_birth == {"outcome": "mask", "mask": "year", "category": "user.demographic.date_of_birth", "key_scope": "identity"}
}

test_most_specific_mask_wins if {
	inp := fx.replace(fx.marketing, {
		"subject": {"id": "a-1", "type": "employee", "roles": ["analyst"]},
		"purpose": "analytics.reporting",
		"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "address", "date_of_birth", "marketing_segment"]},
	})
	f := fields(inp)
	f.id.mask == "hmac"
	f.name.mask == "redact"
	f.address.mask == "redact"
	f.date_of_birth.mask == "year"
	f.marketing_segment.outcome == "allow"
	minimization.key_scopes == {"identity"} with input as inp
}

test_category_not_listed_denied if {
	fields(fx.marketing)["contact.phone"].outcome == "deny"
}

test_unknown_field_denied if {
	inp := fx.replace(fx.support, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["ssn"]}})
	fields(inp).ssn == {"outcome": "deny", "category": "unknown"}
}

test_special_category_needs_role if {
	inp := fx.replace(fx.support, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent"], "mfa": true}})
	fields(inp)["health.notes"].outcome == "deny"
	"special_category.role_required" in {r.code | some r in minimization.info} with input as inp
}

test_special_category_needs_mfa if {
	inp := fx.replace(fx.support, {"subject": {"id": "emp-5", "type": "employee", "roles": ["care_coordinator"]}})
	fields(inp)["health.notes"].outcome == "deny"
	"special_category.mfa_required" in {r.code | some r in minimization.info} with input as inp
}

test_special_category_with_role_and_mfa if {
	inp := fx.replace(fx.support, {"subject": {"id": "emp-5", "type": "employee", "roles": ["care_coordinator"], "mfa": true}})
	fields(inp)["health.notes"] == {"outcome": "allow", "category": "user.health_and_medical", "key_scope": "health"}
	"health" in minimization.key_scopes with input as inp
}

# PCI DSS: a person handling billing sees the card masked to its last four digits, never the
# full number (which only a payment processor receives: processor_test.rego).
test_billing_sees_card_last4_with_mfa if {
	inp := fx.replace(fx.support, {
		"subject": {"id": "emp-8", "type": "employee", "roles": ["billing_agent"], "mfa": true},
		"purpose": "essential.service.payment_processing",
		"case_id": "",
	})
	fields(inp)["payment.card_number"] == {"outcome": "mask", "mask": "last4", "category": "user.financial.credit_card", "key_scope": "financial"}
	fields(inp)["health.notes"].outcome == "deny"
	"financial" in minimization.key_scopes with input as inp
}

test_redacted_mask_needs_no_key if {
	inp := fx.replace(fx.support, {
		"subject": {"id": "dpo-1", "type": "employee", "roles": ["dpo"]},
		"purpose": "essential.legal",
		"case_id": "",
		"resource": {"type": "customer", "customer_id": "c-1", "fields": ["name", "contact.email"]},
	})
	fields(inp)["contact.email"].mask == "redact"
	count(minimization.key_scopes) == 0 with input as inp
}

test_write_of_denied_field_rejected if {
	inp := fx.replace(fx.support, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email", "payment.card_number"]}})
	{r.code | some r in minimization.deny} with input as inp == {"field.write_not_allowed"}
}

test_write_of_allowed_fields_accepted if {
	inp := fx.replace(fx.support, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email"]}})
	count(minimization.deny) == 0 with input as inp
}

test_write_of_masked_field_rejected if {
	inp := fx.replace(fx.support, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["date_of_birth"]}})
	count(minimization.deny) == 1 with input as inp
}

# The engine serves the field tables from data.consentry.generated (evaluated once per policy
# load); decisions must not depend on where the tables come from.
test_materialized_tables_give_same_outcomes if {
	t := minimization.tables
	every inp in [fx.support, fx.marketing] {
		computed := _outcomes with input as inp
		served := _outcomes with input as inp with data.consentry.generated.minimization_tables as t
		computed == served
	}
}

_outcomes := [minimization.fields, minimization.info, minimization.key_scopes, minimization.allowed]

test_unknown_purpose_denies_known_fields if {
	inp := fx.replace(fx.support, {"purpose": "no.such.purpose", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "ssn", "id"]}})
	fields(inp) == {
		"id": {"outcome": "deny", "category": "user.unique_id"},
		"name": {"outcome": "deny", "category": "user.name"},
		"ssn": {"outcome": "deny", "category": "unknown"},
	}
	count(minimization.allowed) == 0 with input as inp
}

# For an employee or service with one role, fields, information reasons, key scopes and allowed
# fields come from the fast path's section; they must be what the rules compute, for every
# role and purpose the role may act for, with and without MFA, for catalogue, special and
# unknown fields.
test_section_outcomes_match_the_rules if {
	# Tables served as the engine serves them (computed once here, not once per input).
	t := fastpath.tables
	mt := minimization.tables
	every r, rdef in data.consentry.catalog.roles {
		every p in rdef.purposes {
			every mfa in [true, false] {
				inp := fx.replace(fx.support, {
					"purpose": p,
					"subject": {"id": "emp-1", "type": "employee", "roles": [r], "mfa": mfa},
					"resource": {"type": "customer", "customer_id": "c-1", "fields": _all_fields},
				})
				_by_section == _by_rules with input as inp
					with data.consentry.generated.fastpath_tables as t
					with data.consentry.generated.minimization_tables as mt
			}
		}
	}
}

_all_fields := array.concat([f | some f, _ in data.consentry.catalog.fields], ["no.such.field"])

_by_section := [minimization.fields, minimization.info, minimization.key_scopes, minimization.allowed]

_by_rules := [minimization._fields_by_rules, minimization._info, minimization._key_scopes_by_rules, minimization._allowed_by_rules]

test_section_is_used_only_for_one_role_employees_and_services if {
	minimization._section with input as fx.support
	not minimization._section with input as fx.processor
	not minimization._section with input as fx.self_read
	two := fx.replace(fx.support, {"subject": {"id": "emp-1", "type": "employee", "roles": ["support_agent", "marketing"]}})
	not minimization._section with input as two
}

test_denied_fields_report_every_requested_field_denied if {
	inp := fx.replace(fx.support, {"resource": {"type": "customer", "customer_id": "c-1", "fields": ["name", "contact.email", "no.such.field"]}})
	minimization.denied_fields == {
		"name": {"outcome": "deny", "category": "user.name"},
		"contact.email": {"outcome": "deny", "category": "user.contact.email", "key_scope": "contact"},
		"no.such.field": {"outcome": "deny", "category": "unknown"},
	} with input as inp
}

_live(id) := {"customer_id": id, "enrichment": {"consents": [], "customer": object.union(fx.customer, {"id": id})}}

# A billing agent's search returns every matching customer with the card masked to its last
# four digits: never a page of full card numbers.
test_billing_search_returns_no_full_card_numbers if {
	inp := fx.replace(fx.support, {
		"subject": {"id": "emp-9", "type": "employee", "roles": ["billing_agent"], "mfa": true},
		"purpose": "essential.service.payment_processing", "case_id": "", "phase": "response",
		"resource": {"type": "customer", "fields": ["id", "payment.card_number", "payment.card_expiry"]},
		"enrichment": {"consents": []},
		"records": [_live("c-1"), _live("c-2")],
	})
	d := consentry.decision with input as inp
	d.allow
	count(d.records) == 2
	every _, r in d.records {
		r.allow
		r.fields["payment.card_number"].mask == "last4"
		r.fields["payment.card_expiry"].mask == "last4"
	}
}

# The shipped catalogue gives no one but a processor a full card number, for any purpose, with
# MFA or without: employees and services (billing included) and customers see at most the last
# four digits. Full decisions, one per purpose x role x subject type x MFA, each request set up
# to pass every other check (consent, an assigned case, a processor agreement naming the purpose
# and every category), so that the card field's outcome is the catalogue's.
_card_fields := {f | some f, def in data.consentry.catalog.fields; startswith(def.category, "user.financial.credit_card")}

_subject(r, "customer", mfa) := {"id": "u-1", "type": "customer", "customer_id": "c-1", "roles": [r], "mfa": mfa}

_subject(r, "processor", mfa) := {"id": "svc-p", "type": "processor", "processor_id": "p-1", "roles": [r], "mfa": mfa}

_subject(r, t, mfa) := {"id": "emp-1", "type": t, "roles": [r], "mfa": mfa} if t in {"employee", "service"}

_types(r) := {r} if r in {"customer", "processor"}

else := {"employee", "service"}

_card_input(p, pdef, r, t, mfa) := {
	"subject": _subject(r, t, mfa),
	"purpose": p,
	"case_id": "case-1",
	"action": [a | some a in ["read", "access_report", "export", "update"]; a in pdef.actions][0],
	"resource": {"type": "customer", "customer_id": "c-1", "fields": array.concat(["id"], sort(_card_fields))},
	"enrichment": {
		"consents": [fx.granted(p)],
		"customer": fx.customer,
		"case": {"id": "case-1", "customer_id": "c-1", "assignees": ["emp-1"], "status": "open"},
		"agreement": {"processor_id": "p-1", "purposes": [p], "categories": ["user", "system"], "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"},
	},
	"time": fx.support.time,
}

_card_decisions := {[p, r, t, mfa]: d |
	some p, pdef in data.consentry.catalog.purposes
	some r, rdef in data.consentry.catalog.roles
	p in rdef.purposes
	some t in _types(r)
	some mfa in [true, false]
	d := consentry.full_decision with input as _card_input(p, pdef, r, t, mfa)
}

test_only_processors_see_full_card_numbers if {
	count(_card_fields) > 0

	# Every request is allowed (the probe reaches the field outcomes) ...
	every _, d in _card_decisions {
		d.allow
	}

	# ... and the payment processor, MFA or not, is the one that gets the full card.
	full := {[p, t, mfa] |
		some [p, _, t, mfa], d in _card_decisions
		some f in _card_fields
		d.fields[f].outcome == "allow"
	}
	full == {["essential.service.payment_processing.charge", "processor", true], ["essential.service.payment_processing.charge", "processor", false]}
}
