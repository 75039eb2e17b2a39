# METADATA
# title: Customer rights (principle 6)
# description: |
#   A customer may read and correct their own record, request their access report ("who
#   accessed my data and why") and request erasure - and nothing about any other customer.
package consentry.rights

import data.consentry.util

_customer if input.subject.type == "customer"

# METADATA
# title: Request-level denials
# description: Customers never list or export other customers' data.
deny contains util.reason("customer.not_self", 403, "a customer may only act on their own record") if {
	_customer
	object.get(input.resource, "customer_id", "") == ""
	input.action != "create"
}

deny contains util.reason("customer.identity_missing", 401, "the customer credential names no customer id") if {
	_customer
	object.get(input.subject, "customer_id", "") == ""
}

# METADATA
# title: Record denials
# description: A customer acting on a record that is not their own is denied.
record_deny(rec) := {util.reason("customer.not_self", 403, "a customer may only act on their own record")} if {
	_customer
	rec.customer_id != object.get(input.subject, "customer_id", "")
} else := set()

# METADATA
# title: Self access
# description: True when a customer acts on their own record.
self if {
	_customer
	input.subject.customer_id != ""
	input.resource.customer_id == input.subject.customer_id
}
