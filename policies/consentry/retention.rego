# METADATA
# title: Retention and erasure (principle 8)
# description: |
#   Records past their retention deadline are not served, erased customers are never served,
#   and a customer the state store does not know is not served either (missing state denies).
#   The rights actions (erase, access_report) are not refused for retention or erasure.
package consentry.retention

import data.consentry.util

# METADATA
# title: Record denials
# description: Lifecycle reasons that deny access to one customer's record rec.
record_deny(rec) := {util.reason("customer.unknown", 403, "no state is known for this customer")} if {
	not rec.enrichment.customer
} else := set() if {
	# A customer's rights outlive retention and erasure: erasing data past its retention
	# period, erasing again, or asking what is held must not be refused because of them.
	input.action in {"erase", "access_report"}
} else := {util.reason("customer.erased", 451, "the customer's data was erased")} if {
	rec.enrichment.customer.erased == true
} else := {util.reason("retention.expired", 451, "the record is past its retention period")} if {
	util.ns(rec.enrichment.customer.retention_until) <= util.now_ns
} else := set()
