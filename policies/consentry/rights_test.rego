# METADATA
# title: Customer rights tests
# description: Allow and deny cases for consentry.rights.
package consentry.rights_test

import data.consentry
import data.consentry.fixtures_test as fx
import data.consentry.rights

test_customer_reads_own_record if {
	d := consentry.decision with input as fx.self_read
	d.allow
	d.fields["contact.email"].outcome == "allow"
	d.fields["health.notes"].outcome == "allow"
	d.fields["payment.card_number"] == {"outcome": "mask", "mask": "last4", "category": "user.financial.credit_card", "key_scope": "financial"}
	rights.self with input as fx.self_read
}

test_customer_cannot_read_another if {
	inp := fx.replace(fx.self_read, {"resource": {"type": "customer", "customer_id": "c-2", "fields": ["id"]}})
	d := consentry.decision with input as inp
	not d.allow
	"customer.not_self" in {r.code | some r in d.reasons}
	not rights.self with input as inp
}

test_customer_corrects_own_record if {
	inp := fx.replace(fx.self_read, {"action": "update", "resource": {"type": "customer", "customer_id": "c-1", "fields": ["contact.email", "address"]}})
	d := consentry.decision with input as inp
	d.allow
}

test_customer_cannot_correct_another if {
	inp := fx.replace(fx.self_read, {"action": "update", "resource": {"type": "customer", "customer_id": "c-2", "fields": ["contact.email"]}})
	not consentry.allow with input as inp
}

test_customer_cannot_list if {
	inp := fx.replace(fx.self_read, {"action": "list", "resource": {"type": "customer", "fields": ["id"]}})
	d := consentry.decision with input as inp
	not d.allow
	"customer.not_self" in {r.code | some r in d.reasons}
}

test_customer_without_customer_id_claim if {
	inp := fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer"}})
	d := consentry.decision with input as inp
	not d.allow
	"customer.identity_missing" in {r.code | some r in d.reasons}
}

test_customer_access_report_and_erasure_request if {
	every a in ["access_report", "erase"] {
		consentry.allow with input as fx.replace(fx.self_read, {"action": a, "resource": {"type": "customer", "customer_id": "c-1"}})
	}
}

test_customer_cannot_export if {
	not consentry.allow with input as fx.replace(fx.self_read, {"action": "export"})
}

test_employee_not_subject_to_self_rule if {
	count(rights.record_deny({"customer_id": "c-2", "enrichment": {}})) == 0 with input as fx.support
}
