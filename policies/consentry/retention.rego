# METADATA
# title: Retention and erasure (principle 8)
# description: |
#   Records past their retention deadline are not served, erased customers are never served,
#   and a customer the state store does not know is not served either (missing state denies).
#   A customer record that names an erasure time is erased, whatever its erased flag says, and
#   one without a retention deadline is not served unless the catalogue allows it
#   (retention.allow_unset) or the customer reads or corrects their own record; a deadline that
#   is not an RFC 3339 timestamp is not served either. The rights actions (erase,
#   access_report) are not refused for retention or erasure.
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
	erased(rec.enrichment.customer)
} else := {util.reason("retention.unset", 451, "the customer has no retention deadline")} if {
	_unset(rec.enrichment.customer)
	not allow_unset
	not _own_record(rec)
} else := set() if {
	_unset(rec.enrichment.customer)
} else := {util.reason("retention.invalid", 451, "the customer's retention deadline is not an RFC 3339 timestamp")} if {
	not util.timestamp(rec.enrichment.customer.retention_until)
} else := {util.reason("retention.expired", 451, "the record is past its retention period")} if {
	util.ns(rec.enrichment.customer.retention_until) <= util.now_ns
} else := set()

# No retention deadline: none recorded, or null.
_unset(c) if not "retention_until" in object.keys(c)

_unset(c) if c.retention_until == null

# A customer reading or correcting their own record (GDPR Art. 15, 16) is not refused for want
# of a retention deadline: the deadline is the organisation's to set, and a customer
# auto-created by recording a consent has none until it is. A deadline that has passed, or one
# that is malformed, still denies.
_own_record(rec) if {
	input.subject.type == "customer"
	input.action in {"read", "update"}
	object.get(input.subject, "customer_id", "") != ""
	rec.customer_id == input.subject.customer_id
}

# METADATA
# title: Erased customer
# description: |
#   True when customer state c says the customer was erased: the erased flag, or an erasure
#   time (a record that names one and says erased: false contradicts itself and fails closed,
#   as a consent record naming a withdrawal does).
erased(c) if c.erased == true

erased(c) if c.erased_at

# METADATA
# title: Customers without a retention deadline
# description: |
#   True when the catalogue (retention.allow_unset) lets customers without a retention_until
#   be served; by default they are not: data kept with no deadline is data kept forever.
allow_unset if util.catalog.retention.allow_unset == true
