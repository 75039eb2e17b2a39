# METADATA
# title: Retention and erasure tests
# description: Allow and deny cases for consentry.retention.
package consentry.retention_test

import data.consentry.fixtures_test as fx
import data.consentry.retention

codes(state) := x if {
	x := {r.code | some r in retention.record_deny({"customer_id": "c-1", "enrichment": {"consents": [], "customer": state}})} with input as fx.support
}

test_live_customer_served if {
	count(codes(fx.customer)) == 0
}

test_no_retention_deadline_served if {
	count(codes({"id": "c-1", "erased": false})) == 0
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
