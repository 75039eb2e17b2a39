# METADATA
# title: Consent tests
# description: Allow and deny cases for consentry.consent.
package consentry.consent_test

import data.consentry
import data.consentry.consent
import data.consentry.fixtures_test as fx

rec(consents) := {"customer_id": "c-1", "enrichment": {"consents": consents, "customer": fx.customer}}

codes(inp, consents) := x if {
	x := {r.code | some r in consent.record_deny(rec(consents))} with input as inp
}

p := "marketing.communications.email"

test_granted_consent_allows if {
	count(codes(fx.marketing, [fx.granted(p)])) == 0
}

test_parent_purpose_consent_covers_child if {
	count(codes(fx.marketing, [fx.granted("marketing")])) == 0
}

test_other_purpose_consent_does_not_cover if {
	codes(fx.marketing, [fx.granted("analytics.reporting")]) == {"consent.missing"}
}

test_sibling_prefix_does_not_cover if {
	codes(fx.marketing, [fx.granted("marketing.communications.e")]) == {"consent.missing"}
}

test_no_consent_denied if {
	codes(fx.marketing, []) == {"consent.missing"}
}

test_withdrawn_denied if {
	codes(fx.marketing, [{"purpose": p, "status": "withdrawn", "withdrawn_at": "2026-06-01T00:00:00Z"}]) == {"consent.withdrawn"}
}

test_expired_status_denied if {
	codes(fx.marketing, [{"purpose": p, "status": "expired"}]) == {"consent.expired"}
}

test_expiry_in_past_denied if {
	codes(fx.marketing, [object.union(fx.granted(p), {"expires_at": "2026-11-01T00:00:00Z"})]) == {"consent.expired"}
}

test_expiry_in_future_allowed if {
	count(codes(fx.marketing, [object.union(fx.granted(p), {"expires_at": "2027-11-01T00:00:00Z"})])) == 0
}

test_withdrawn_wins_over_expired if {
	codes(fx.marketing, [{"purpose": p, "status": "withdrawn"}, {"purpose": "marketing", "status": "expired"}]) == {"consent.withdrawn"}
}

test_one_valid_consent_is_enough if {
	# Granted for the parent purpose after the customer withdrew from this one.
	count(codes(fx.marketing, [{"purpose": p, "status": "withdrawn", "withdrawn_at": "2026-01-05T00:00:00Z"}, fx.granted("marketing")])) == 0
}

test_narrower_withdrawal_takes_a_broader_grant_back if {
	later := {"purpose": p, "status": "withdrawn", "withdrawn_at": "2026-06-01T00:00:00Z"}
	codes(fx.marketing, [fx.granted("marketing"), later]) == {"consent.withdrawn"}
	untimed := {"purpose": p, "status": "withdrawn"}
	codes(fx.marketing, [fx.granted("marketing"), untimed]) == {"consent.withdrawn"}
	every inp in [
		fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing"), later], "customer": fx.customer}}),
		fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing"), untimed], "customer": fx.customer}}),
	] {
		not consentry.decision.allow with input as inp
		not consentry.full_decision.allow with input as inp
	}
}

test_granted_record_naming_a_later_withdrawal_is_withdrawn if {
	contradicts := object.union(fx.granted(p), {"withdrawn_at": "2026-06-01T00:00:00Z"})
	codes(fx.marketing, [contradicts]) == {"consent.withdrawn"}
	no_grant_time := object.remove(contradicts, ["granted_at"])
	codes(fx.marketing, [no_grant_time]) == {"consent.withdrawn"}

	# A grant after the withdrawal it names is a grant.
	regranted := object.union(fx.granted(p), {"withdrawn_at": "2026-01-01T00:00:00Z"})
	count(codes(fx.marketing, [regranted])) == 0

	# The same on the fast path and the full rules, for the whole decision.
	every consents in [[contradicts], [no_grant_time], [fx.granted("marketing"), contradicts]] {
		inp := fx.replace(fx.marketing, {"enrichment": {"consents": consents, "customer": fx.customer}})
		not consentry.decision.allow with input as inp
		not consentry.full_decision.allow with input as inp
		{r.code | some r in consentry.decision.reasons} == {"consent.withdrawn"} with input as inp
	}
	inp := fx.replace(fx.marketing, {"enrichment": {"consents": [regranted], "customer": fx.customer}})
	consentry.decision.allow with input as inp
	consentry.full_decision.allow with input as inp
}

test_not_required_for_contract_purposes if {
	count(codes(fx.support, [])) == 0
}

# The latest choice wins whichever purpose is broader: a withdrawal from all marketing takes
# back an earlier email grant, and an email grant after it is consent again.
test_later_parent_withdrawal_takes_back_child_grant if {
	withdraw_all := {"purpose": "marketing", "status": "withdrawn", "withdrawn_at": "2026-10-01T00:00:00Z"}
	codes(fx.marketing, [fx.granted(p), withdraw_all]) == {"consent.withdrawn"}
	not consentry.decision.allow with input as fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted(p), withdraw_all], "customer": fx.customer}})
}

test_child_grant_after_parent_withdrawal_counts if {
	withdraw_all := {"purpose": "marketing", "status": "withdrawn", "withdrawn_at": "2026-01-01T00:00:00Z"}
	count(codes(fx.marketing, [fx.granted(p), withdraw_all])) == 0
}

# A grant dated in the future is no consent yet; one within the store's clock skew counts.
test_grant_dated_in_the_future_is_no_consent if {
	future := object.union(fx.granted(p), {"granted_at": "2027-01-01T00:00:00Z"})
	codes(fx.marketing, [future]) == {"consent.missing"}
	not consentry.decision.allow with input as fx.replace(fx.marketing, {"enrichment": {"consents": [future], "customer": fx.customer}})
}

test_grant_within_clock_skew_counts if {
	# fx.now_ns is 2026-11-22T09:00:00Z; two minutes later is within the 5-minute skew.
	soon := object.union(fx.granted(p), {"granted_at": "2026-11-22T09:02:00Z"})
	count(codes(fx.marketing, [soon])) == 0
}

# A purpose may require consent under a given privacy notice or a later one
# (purposes[p].min_notice_version): a consent to an older text, or one naming no notice, no
# longer counts. Both paths of the decision agree.
_notice_catalog := object.union(data.consentry.catalog, {"purposes": {p: {"min_notice_version": "2026-06"}}})

_under(version) := object.union(fx.granted(p), {"notice_version": version})

_notice_decision(consents) := [d, full] if {
	inp := fx.replace(fx.marketing, {"enrichment": {"consents": consents, "customer": fx.customer}})
	d := consentry.decision with input as inp with data.consentry.catalog as _notice_catalog
	full := consentry.full_decision with input as inp with data.consentry.catalog as _notice_catalog
}

test_consent_under_an_older_notice_does_not_count if {
	[d, full] := _notice_decision([fx.granted(p)])
	d == full
	not d.allow
	d.reasons == [{"code": "consent.notice_outdated", "message": "the customer's consent for \"marketing.communications.email\" was given under a notice older than \"2026-06\""}]
}

test_consent_without_a_notice_does_not_count_when_one_is_required if {
	[d, full] := _notice_decision([object.remove(fx.granted(p), ["notice_version"])])
	d == full
	fx.codes(d) == {"consent.notice_outdated"}
}

test_consent_under_the_required_notice_or_later_counts if {
	[d, full] := _notice_decision([_under("2026-06")])
	d == full
	d.allow
	[d2, full2] := _notice_decision([fx.granted(p), _under("2026-09")])
	d2 == full2
	d2.allow
}

test_withdrawal_and_expiry_explain_before_the_notice if {
	[d, full] := _notice_decision([fx.granted(p), object.union(_under("2026-06"), {"status": "withdrawn"})])
	d == full
	fx.codes(d) == {"consent.withdrawn"}
}

test_without_min_notice_version_any_notice_counts if {
	count(codes(fx.marketing, [object.remove(fx.granted(p), ["notice_version"])])) == 0
}

# The list response phase decides each record with the same notice rule.
_rec_of(id, c) := {"customer_id": id, "enrichment": {"consents": [c], "customer": object.union(fx.customer, {"id": id})}}

test_list_records_check_the_notice if {
	inp := fx.replace(fx.marketing, {
		"action": "list", "phase": "response",
		"resource": {"type": "customer", "fields": ["id", "contact.email"]}, "enrichment": {"consents": []},
		"records": [_rec_of("c-1", fx.granted(p)), _rec_of("c-2", _under("2026-07"))],
	})
	d := consentry.decision with input as inp with data.consentry.catalog as _notice_catalog
	d == consentry.full_decision with input as inp with data.consentry.catalog as _notice_catalog
	d.records["c-1"].reasons[0].code == "consent.notice_outdated"
	d.records["c-2"].allow
}
