# METADATA
# title: Helper tests
# description: fideslang matching and role helpers.
package consentry.util_test

import data.consentry.fixtures_test as fx
import data.consentry.util

test_category_matches_self_and_children if {
	util.category_matches("user.contact.email", "user.contact.email")
	util.category_matches("user.contact.email", "user.contact")
	not util.category_matches("user.contactless", "user.contact")
	not util.category_matches("user.contact", "user.contact.email")
}

test_purpose_covers if {
	util.purpose_covers("marketing", "marketing.communications.email")
	not util.purpose_covers("marketing.communications.email", "marketing")
}

test_roles_include_type_for_customers_and_processors if {
	util.roles == {"customer"} with input as fx.self_read
	util.roles == {"processor"} with input as fx.processor
	util.roles == {"support_agent"} with input as fx.support
}

test_type_bound_roles_need_the_type if {
	# A token cannot make an employee a customer or a service a processor: those checks run by type.
	util.roles == {"support_agent"} with input as fx.replace(fx.support, {"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent", "customer", "processor"]}})
	util.roles == set() with input as fx.replace(fx.processor, {"subject": {"id": "svc-x", "type": "service", "roles": ["processor"]}})
	util.roles == {"customer"} with input as fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer", "customer_id": "c-1", "roles": ["customer"]}})
}

test_purpose_undefined_when_unknown if {
	not util.purpose with input as fx.replace(fx.support, {"purpose": "x.y"})
}

test_covering_purposes_are_the_purposes_that_cover if {
	util.covering_purposes == {"marketing", "marketing.communications", "marketing.communications.email"} with input.purpose as "marketing.communications.email"
	every p in ["marketing", "marketing.communications", "marketing.communications.email"] {
		util.purpose_covers(p, "marketing.communications.email")
	}
	not "marketing.comm" in util.covering_purposes with input.purpose as "marketing.communications.email"
	util.covering_purposes == {"essential"} with input.purpose as "essential"
}

test_covering_purposes_read_the_materialized_table if {
	# The engine serves catalogue purposes from the materialized table ...
	util.covering_purposes == {"from-table"} with input.purpose as "marketing"
		with data.consentry.generated.covering_purposes as {"marketing": {"from-table"}}

	# ... and computes any other purpose.
	util.covering_purposes == {"a", "a.b"} with input.purpose as "a.b"
		with data.consentry.generated.covering_purposes as {"marketing": {"from-table"}}
}

test_covering_table_has_every_catalogue_purpose if {
	count(util.covering_table) == count(util.catalog.purposes)
	every p, _ in util.catalog.purposes {
		util.covering_table[p] == util.covering(p)
	}
}

test_records_of_a_single_request if {
	recs := util.records with input as fx.support
	count(recs) == 1
	some rec in recs
	rec.customer_id == "c-1"
	rec.enrichment.customer.id == fx.support.enrichment.customer.id
}

test_records_of_a_list_response if {
	r1 := {"customer_id": "c-1", "enrichment": {"consents": []}}
	r2 := {"customer_id": "c-2", "enrichment": {"consents": []}}
	recs := util.records with input as fx.replace(fx.marketing, {"phase": "response", "resource": {"type": "customer", "customer_id": "", "fields": []}, "records": [r1, r2]})
	{r.customer_id | some r in recs} == {"c-1", "c-2"}
}

test_no_records_for_a_list_request if {
	count(util.records) == 0 with input as fx.replace(fx.marketing, {"resource": {"type": "customer", "customer_id": "", "fields": []}})
}

# Employee roles are for the organisation's own staff and systems: a processor's or a
# customer's token listing them grants nothing.
test_processors_and_customers_hold_no_employee_roles if {
	util.roles == {"processor"} with input as fx.replace(fx.processor, {"subject": {"id": "svc-mail", "type": "processor", "processor_id": "p-mail", "roles": ["support_lead", "billing_agent"]}})
	util.roles == {"customer"} with input as fx.replace(fx.self_read, {"subject": {"id": "u-1", "type": "customer", "customer_id": "c-1", "roles": ["customer", "marketing"]}})
	util.roles == {"support_lead", "billing_agent"} with input as fx.replace(fx.support, {"subject": {"id": "svc-1", "type": "service", "roles": ["support_lead", "billing_agent"]}})
}
