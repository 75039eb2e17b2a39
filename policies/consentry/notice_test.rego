# METADATA
# title: Privacy notice version tests
# description: |
#   min_notice_version and notice_version are dates "YYYY-MM" or "YYYY-MM-DD"; anything else
#   fails closed when a minimum is set, and nothing is checked when none is. The fast path and
#   the full rules agree on each.
package consentry.notice_test

import data.consentry
import data.consentry.fixtures_test as fx
import data.consentry.util

p := "marketing.communications.email"

_catalog(min) := object.union(data.consentry.catalog, {"purposes": {p: {"min_notice_version": min}}})

_under(v) := object.union(fx.granted(p), {"notice_version": v})

_input(consents) := fx.replace(fx.marketing, {"enrichment": {"consents": consents, "customer": fx.customer}})

# Both paths of the decision, which must agree, under catalogue cat.
_decide(consents, cat) := d if {
	inp := _input(consents)
	d := consentry.decision with input as inp with data.consentry.catalog as cat
	d == consentry.full_decision with input as inp with data.consentry.catalog as cat
}

test_notice_versions_compare_as_dates if {
	fx.codes(_decide([_under("2026-09")], _catalog("2026-10"))) == {"consent.notice_outdated"}
	_decide([_under("2026-10")], _catalog("2026-10")).allow
	_decide([_under("2026-11-02")], _catalog("2026-10")).allow
	_decide([_under("2026-10-05")], _catalog("2026-10-05")).allow

	# A month is older than a minimum day within it.
	fx.codes(_decide([_under("2026-10")], _catalog("2026-10-05"))) == {"consent.notice_outdated"}
}

# A version not zero-padded, or not a date, cannot be ordered: it counts as outdated.
test_a_notice_version_in_another_format_is_outdated if {
	every v in ["2026-9", "2027-1", "1.10", "v3", "", "2026-13", 202611, null, true] {
		fx.codes(_decide([_under(v)], _catalog("2026-10"))) == {"consent.notice_outdated"}
	}
}

# A minimum consentry cannot order fails closed: no consent meets it, and the reason says why.
test_a_minimum_in_another_format_fails_closed if {
	every min in ["1.10", "2026-9", 10, "", null] {
		d := _decide([_under("2026-10"), _under("9999-12-31")], _catalog(min))
		not d.allow
		[r] := d.reasons
		r.code == "consent.notice_outdated"
		contains(r.message, "is not a YYYY-MM or YYYY-MM-DD date")
	}
}

# Without a minimum every consent counts, whatever its notice_version says.
test_without_a_minimum_any_notice_version_counts if {
	every v in ["2026-03", "1.9", 3, null, ""] {
		_decide([_under(v)], data.consentry.catalog).allow
	}
}

# The catalogue's own minimums are in the format (a wrong one would deny every consent).
test_catalogue_minimums_are_dates if {
	every _, pdef in data.consentry.catalog.purposes {
		util.notice_version_format(object.get(pdef, "min_notice_version", "2026-01"))
	}
}
