# METADATA
# title: Retention and erasure tests
# description: Allow and deny cases for consentry.retention.
package consentry.retention_test

import data.consentry
import data.consentry.fixtures_test as fx
import data.consentry.retention

codes(state) := x if {
	x := {r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": [], "customer": state}})} with input as fx.support
}

test_live_customer_served if {
	count(codes(fx.customer)) == 0
}

# Data kept with no deadline is kept forever: not served unless the catalogue allows it.
test_no_retention_deadline_denied if {
	codes({"id": "c-1", "erased": false}) == {"retention.unset"}
}

test_no_retention_deadline_served_when_the_catalogue_allows_it if {
	x := {r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": [], "customer": {"id": "c-1", "erased": false}}})} with input as fx.support
		with data.consentry.catalog.retention as {"allow_unset": true}
	count(x) == 0
}

test_no_retention_deadline_does_not_block_rights if {
	count(rights_codes("erase", {"id": "c-1", "erased": false})) == 0
}

# A record naming an erasure time is erased, whatever its flag says (fail closed).
test_erasure_time_without_flag_is_erased if {
	codes({"id": "c-1", "erased": false, "erased_at": "2026-10-01T00:00:00Z", "retention_until": "2030-01-01T00:00:00Z"}) == {"customer.erased"}
	codes({"id": "c-1", "erased_at": "2026-10-01T00:00:00Z", "retention_until": "2030-01-01T00:00:00Z"}) == {"customer.erased"}
}

test_unknown_customer_denied if {
	{r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": []}})} with input as fx.support == {"customer.unknown"}
}

test_erased_customer_denied if {
	codes({"id": "c-1", "erased": true, "erased_at": "2026-10-01T00:00:00Z"}) == {"customer.erased"}
}

test_past_retention_denied if {
	codes({"id": "c-1", "erased": false, "retention_until": "2026-11-01T00:00:00Z"}) == {"retention.expired"}
}

test_erased_wins_over_retention if {
	codes({"id": "c-1", "erased": true, "retention_until": "2020-01-01T00:00:00Z"}) == {"customer.erased"}
}

# The rights actions outlive retention and erasure: data past its retention period can be
# erased, an erasure can be repeated, and the customer can ask what is held. A customer the
# state does not know is still refused.
rights_codes(action, state) := x if {
	x := {r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": [], "customer": state}})} with input as fx.replace(fx.support, {"action": action})
}

test_rights_actions_outlive_retention_and_erasure if {
	every action in ["erase", "access_report"] {
		count(rights_codes(action, {"id": "c-1", "erased": false, "retention_until": "2026-01-01T00:00:00Z"})) == 0
		count(rights_codes(action, {"id": "c-1", "erased": true, "retention_until": "2020-01-01T00:00:00Z"})) == 0
	}
	rights_codes("read", {"id": "c-1", "erased": false, "retention_until": "2026-01-01T00:00:00Z"}) == {"retention.expired"}
}

test_rights_actions_need_a_known_customer if {
	{r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": []}})} with input as fx.replace(fx.support, {"action": "erase"}) == {"customer.unknown"}
}

test_decision_denies_erasure_time_without_flag if {
	cust := object.union(fx.customer, {"erased_at": "2026-10-01T00:00:00Z"})
	d := consentry.decision with input as fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": cust}})
	not d.allow
	fx.codes(d) == {"customer.erased"}
}

test_decision_denies_customer_without_retention_deadline if {
	inp := fx.replace(fx.marketing, {"enrichment": {"consents": [fx.granted("marketing.communications.email")], "customer": {"id": "c-1", "erased": false}}})
	d := consentry.decision with input as inp
	not d.allow
	d.status == 451
	fx.codes(d) == {"retention.unset"}
	consentry.decision.allow with input as inp with data.consentry.catalog.retention.allow_unset as true
}

# A customer reads and corrects their own record (GDPR Art. 15, 16) though it has no retention
# deadline (a customer auto-created by recording a consent has none until one is set); a
# deadline that has passed still denies, and the exemption is theirs alone.
_self(action, cust) := fx.replace(fx.self_read, {"action": action, "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email"]}, "enrichment": {"consents": [], "customer": cust}})

test_customer_reads_and_corrects_own_record_without_retention_deadline if {
	every action in ["read", "update"] {
		d := consentry.decision with input as _self(action, {"id": "c-1", "erased": false})
		d.allow
		d == consentry.full_decision with input as _self(action, {"id": "c-1", "erased": false})
		consentry.decision.allow with input as _self(action, {"id": "c-1", "erased": false, "retention_until": null})
		fx.codes(consentry.decision) == {"retention.expired"} with input as _self(action, object.union(fx.customer, {"retention_until": "2026-01-01T00:00:00Z"}))
	}
	other := fx.replace(_self("read", {"id": "c-2", "erased": false}), {"resource": {"type": "customer", "customer_id": "c-2", "fields": ["id"]}})
	"retention.unset" in fx.codes(consentry.decision) with input as other
}

# A retention deadline that is present but not an RFC 3339 timestamp is not served, under
# strict and non-strict built-in errors alike (the shape is checked before parsing).
test_malformed_retention_deadline_denied if {
	every v in ["", "never", "2030-01-01", "2030-13-01T00:00:00Z", 1893456000, true, {}] {
		codes({"id": "c-1", "erased": false, "retention_until": v}) == {"retention.invalid"}
		d := consentry.decision with input as fx.replace(fx.support, {"enrichment": object.union(fx.support.enrichment, {"customer": object.union(fx.customer, {"retention_until": v})})})
		fx.codes(d) == {"retention.invalid"}
		d.status == 451
	}
}

# A null deadline is no deadline.
test_null_retention_deadline_is_unset if {
	codes({"id": "c-1", "erased": false, "retention_until": null}) == {"retention.unset"}
}
