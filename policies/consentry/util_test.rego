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

test_purpose_undefined_when_unknown if {
	not util.purpose with input as fx.replace(fx.support, {"purpose": "x.y"})
}
