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
