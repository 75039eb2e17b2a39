# METADATA
# title: Sub-processor tests
# description: Allow and deny cases for consentry.processor.
package consentry.processor_test

import data.consentry
import data.consentry.fixtures_test as fx
import data.consentry.processor

agreement := fx.processor.enrichment.agreement

with_agreement(a) := fx.replace(fx.processor, {"enrichment": {"consents": fx.processor.enrichment.consents, "customer": fx.customer, "agreement": a}})

codes(inp) := x if {
	x := {r.code | some r in processor.deny} with input as inp
}

test_processor_with_agreement_gets_only_its_categories if {
	d := consentry.decision with input as fx.processor
	d.allow
	d.fields["contact.email"].outcome == "allow"
	d.fields.name.outcome == "allow"
	d.fields.date_of_birth.outcome == "deny"
}

test_no_agreement if {
	inp := fx.replace(fx.processor, {"enrichment": {"consents": fx.processor.enrichment.consents, "customer": fx.customer}})
	codes(inp) == {"processor.no_agreement"}
	d := consentry.decision with input as inp
	not d.allow
}

test_agreement_of_another_processor if {
	"processor.agreement_mismatch" in codes(with_agreement(object.union(agreement, {"processor_id": "p-other"})))
}

test_agreement_expired if {
	codes(with_agreement(object.union(agreement, {"valid_until": "2026-11-01T00:00:00Z"}))) == {"processor.agreement_expired"}
}

test_agreement_not_started if {
	codes(with_agreement(object.union(agreement, {"valid_from": "2026-12-01T00:00:00Z"}))) == {"processor.agreement_not_started"}
}

test_agreement_without_start if {
	inp := with_agreement(object.remove(agreement, ["valid_from"]))
	codes(inp) == {"processor.agreement_not_started"}
	not consentry.decision.allow with input as inp
}

test_agreement_without_end if {
	codes(with_agreement(object.remove(agreement, ["valid_until"]))) == {"processor.agreement_unbounded"}
}

test_purpose_not_covered if {
	codes(with_agreement(object.union(agreement, {"purposes": ["analytics.reporting"]}))) == {"processor.purpose_not_covered"}
}

test_processor_still_needs_consent if {
	inp := fx.replace(fx.processor, {"enrichment": {"consents": [], "customer": fx.customer, "agreement": agreement}})
	d := consentry.decision with input as inp
	not d.allow
	"consent.missing" in {r.code | some r in d.reasons}
}

test_employees_unaffected if {
	count(codes(fx.support)) == 0
	processor.category_covered("user.health_and_medical") with input as fx.support
}

# Full card numbers go to a payment processor only: under an agreement that names the charge
# purpose itself (catalogue agreement_exact) and covers payment data, for one named customer, read only. A processor is a
# system, not a person: the payment category exempts it from the MFA claim.
_charge_agreement := {"processor_id": "p-pay", "purposes": ["essential.service.payment_processing.charge"], "categories": ["user.unique_id", "user.name", "user.financial"], "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"}

_charge := fx.replace(fx.processor, {
	"subject": {"id": "svc-pay", "type": "processor", "processor_id": "p-pay"},
	"purpose": "essential.service.payment_processing.charge",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "payment.card_number", "payment.card_expiry", "contact.email", "health.notes"]},
	"enrichment": {"consents": [], "customer": fx.customer, "agreement": _charge_agreement},
})

test_payment_processor_gets_the_full_card if {
	d := consentry.decision with input as _charge
	d.allow
	d.fields["payment.card_number"].outcome == "allow"
	d.fields["payment.card_expiry"].outcome == "allow"
	d.fields["contact.email"].outcome == "deny"
	d.fields["health.notes"].outcome == "deny"
	d.key_scopes == ["financial"]
	not _mfa_reason(d, "payment.card_number")
}

_mfa_reason(d, f) if {
	some r in d.reasons
	r.code == "special_category.mfa_required"
	startswith(r.message, f)
}

# An agreement for a parent purpose ("run the service", "handle billing") does not reach the
# charge purpose: agreement_exact asks for the purpose itself.
test_payment_processor_agreement_names_the_charge_purpose_itself if {
	every parent in ["essential.service", "essential.service.payment_processing"] {
		a := object.union(_charge_agreement, {"purposes": [parent], "categories": ["user"]})
		d := consentry.decision with input as fx.replace(_charge, {"enrichment": object.union(_charge.enrichment, {"agreement": a})})
		not d.allow
		fx.codes(d) == {"processor.purpose_not_covered"}
	}
}

test_agreement_for_a_parent_covers_a_purpose_without_agreement_exact if {
	a := object.union(_charge_agreement, {"purposes": ["essential.service.payment_processing"]})
	k := "essential.service.payment_processing.charge"
	ps := fx.replace(data.consentry.catalog.purposes, {k: object.remove(data.consentry.catalog.purposes[k], ["agreement_exact"])})
	d := consentry.decision with input as fx.replace(_charge, {"enrichment": object.union(_charge.enrichment, {"agreement": a})})
		with data.consentry.catalog as fx.replace(data.consentry.catalog, {"purposes": ps})
	d.allow
}

_rec(id) := {"customer_id": id, "enrichment": {"consents": [], "customer": object.union(fx.customer, {"id": id})}}

# customer_required binds the response phase too: a record of another customer is not served.
test_payment_processor_response_phase_serves_the_named_customer_only if {
	d := consentry.decision with input as object.union(_charge, {"phase": "response", "records": [_rec("c-1"), _rec("c-2")]})
	d.records["c-1"].allow
	not d.records["c-2"].allow
	{r.code | some r in d.records["c-2"].reasons} == {"resource.other_customer"}
}

test_payment_processor_needs_payment_data_in_its_agreement if {
	a := object.union(_charge_agreement, {"categories": ["user.unique_id", "user.name"]})
	d := consentry.decision with input as fx.replace(_charge, {"enrichment": object.union(_charge.enrichment, {"agreement": a})})
	d.allow
	d.fields["payment.card_number"].outcome == "deny"
	d.fields.name.outcome == "allow"
}

test_payment_processor_charges_one_named_customer_only if {
	d := consentry.decision with input as fx.replace(_charge, {"resource": {"type": "customer", "fields": ["payment.card_number"]}})
	not d.allow
	"resource.customer_missing" in fx.codes(d)
	l := consentry.decision with input as fx.replace(_charge, {"action": "list"})
	not l.allow
}

test_mail_processor_gets_no_card if {
	# The mailing processor's agreement covers neither the purpose nor payment data.
	d := consentry.decision with input as fx.replace(_charge, {"subject": fx.processor.subject, "enrichment": fx.processor.enrichment})
	not d.allow
	"processor.purpose_not_covered" in fx.codes(d)
}

test_mfa_exemption_is_for_processors_only if {
	# A category without the exemption asks a processor for MFA like anyone else.
	cats := object.union(data.consentry.catalog.special_categories, {"user.financial": {"mfa_exempt_processors": false}})
	d := consentry.decision with input as _charge with data.consentry.catalog.special_categories as cats
	d.fields["payment.card_number"].outcome == "deny"
	_mfa_reason(d, "payment.card_number")
}
