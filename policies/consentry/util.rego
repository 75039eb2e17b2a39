# METADATA
# title: Shared helpers
# description: |
#   Helpers every consentry policy uses: the catalogue, the caller's effective roles, fideslang
#   category matching and the reason constructor. Nothing here decides on its own.
package consentry.util

# METADATA
# title: Catalogue
# description: The policy data (purposes, roles, fields, special categories) from policies/data.
catalog := data.consentry.catalog

# METADATA
# title: Declared purpose definition
# description: The catalogue entry of the declared purpose; undefined when the purpose is unknown.
purpose := catalog.purposes[input.purpose]

# METADATA
# title: Effective roles
# description: |
#   The caller's roles; customers and processors also hold the role named by their type.
#   The roles "customer" and "processor" stand for a subject type and are held only by a
#   subject of that type: a token claiming them for an employee or a service grants nothing,
#   since the self-service and processor checks run by type. A customer or a processor holds
#   that one role only: a token listing employee roles for them (support_lead, billing_agent)
#   grants nothing either, since those roles are for the organisation's own staff and systems.
# (A complete rule, not a partial set: complete rules are evaluated once per query.)
roles := {r | some r in object.get(input.subject, "roles", []); type_role_ok(r)} | _type_role

_type_role := {input.subject.type} if input.subject.type in {"customer", "processor"}

else := set()

# METADATA
# title: Role allowed for the subject type
# description: |
#   False for the type-bound roles "customer" and "processor" held by another type, and for
#   any other role held by a customer or a processor.
type_role_ok(r) if {
	not r in {"customer", "processor"}
	not input.subject.type in {"customer", "processor"}
}

type_role_ok(r) if r == input.subject.type

# METADATA
# title: Now
# description: Decision time in nanoseconds, from the input so that replay sees the original time.
now_ns := input.time.now_ns

# METADATA
# title: Category match
# description: True when category c is the fideslang key k or one of its descendants.
category_matches(c, k) if c == k

category_matches(c, k) if startswith(c, sprintf("%s.", [k]))

# METADATA
# title: Any category match
# description: |
#   True when category c is one of the fideslang keys in ks or a descendant of one. One
#   built-in call instead of a loop: matching "c." against "k." keeps key boundaries
#   ("user.contactless" does not match "user.contact").
any_category_matches(c, ks) if strings.any_prefix_match(sprintf("%s.", [c]), {sprintf("%s.", [k]) | some k in ks})

# METADATA
# title: Purpose match
# description: True when a consent or agreement given for purpose p covers the declared purpose q.
purpose_covers(p, q) if p == q

purpose_covers(p, q) if startswith(q, concat("", [p, "."]))

# METADATA
# title: Covering purposes
# description: |
#   The purposes whose consent or agreement covers the declared purpose: the purpose and each
#   of its parent keys (exactly the p for which purpose_covers(p, input.purpose) holds). For a
#   catalogue purpose it is looked up in the table the engine materializes from covering_table.
covering_purposes := s if {
	s := data.consentry.generated.covering_purposes[input.purpose]
} else := covering(input.purpose)

# METADATA
# title: Covering purposes of p
# description: p and each of its parent keys.
covering(p) := {concat(".", array.slice(parts, 0, n)) |
	parts := split(p, ".")
	some n in numbers.range(1, count(parts))
}

# METADATA
# title: Covering table
# description: |
#   covering(p) for every catalogue purpose. Depends on the catalogue only: the engine evaluates
#   it once when it loads a policy and serves it from data.consentry.generated.covering_purposes.
covering_table := {p: covering(p) | some p, _ in catalog.purposes}

# METADATA
# title: Reason
# description: A deny or information reason with the HTTP status it implies.
reason(code, status, message) := {"code": code, "status": status, "message": message}

# METADATA
# title: Time parse
# description: Nanoseconds of an RFC 3339 timestamp.
ns(ts) := time.parse_rfc3339_ns(ts)

# METADATA
# title: RFC 3339 timestamp
# description: |
#   True when v is a string that parses as an RFC 3339 timestamp. The shape is checked before
#   parsing (timestamp_shape), so that a malformed value ("", null, a number, "next year") is
#   reported by the caller instead of failing the decision (strict built-in errors) or silently
#   passing a check whose comparison is undefined (non-strict). A well-shaped date that does
#   not exist ("2030-02-31T00:00:00Z") still fails to parse: an error under strict built-in
#   errors (the request is denied), not a timestamp otherwise.
timestamp(v) if {
	timestamp_shape(v)
	time.parse_rfc3339_ns(v)
}

# METADATA
# title: RFC 3339 shape
# description: True when v is a string shaped like an RFC 3339 timestamp (see timestamp).
timestamp_shape(v) if {
	is_string(v)
	regex.match(`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`, v)
}

# METADATA
# title: Privacy notice version format
# description: |
#   True when v is a privacy notice version consentry can order: a zero-padded date "YYYY-MM"
#   or "YYYY-MM-DD". These sort as strings in date order ("2026-10" > "2026-09"; a month sorts
#   before its days, so "2026-10" is older than a minimum of "2026-10-05").
notice_version_format(v) if {
	is_string(v)
	regex.match(`^[0-9]{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?$`, v)
}

# METADATA
# title: Notice version accepted
# description: |
#   True when consent record c meets the minimum privacy notice of purpose definition pdef
#   (catalogue min_notice_version). Without a minimum every consent passes, whatever its
#   notice_version. With one, the consent must name a version in notice_version_format that is
#   not older; a minimum that is not in that format (a number, "1.10", "") fails closed: no
#   consent meets it, since consentry cannot tell which notices are older.
notice_ok(_, pdef) if not "min_notice_version" in object.keys(pdef)

notice_ok(c, pdef) if {
	m := pdef.min_notice_version
	notice_version_format(m)
	v := c.notice_version
	notice_version_format(v)
	v >= m
}

# METADATA
# title: Outdated notice message
# description: The message of consent.notice_outdated for purpose p with definition pdef.
notice_outdated_message(p, pdef) := sprintf("the customer's consent for %q was given under a notice older than %q", [p, pdef.min_notice_version]) if {
	notice_version_format(pdef.min_notice_version)
} else := sprintf("the catalogue's min_notice_version for %q is not a YYYY-MM or YYYY-MM-DD date, so no consent meets it", [p])

# METADATA
# title: Withdrawal takes a grant back
# description: |
#   True when consent record w is a withdrawal and grant g is not later: the customer's latest
#   choice wins, whichever of the two purposes is broader. Consent to "marketing" does not
#   outlive a later withdrawal from "marketing.communications.email", nor consent to
#   "marketing.communications.email" a later withdrawal from all "marketing". A withdrawal
#   without a time counts as the later. The caller checks that both cover the declared
#   purpose (so one purpose covers the other).
takes_back(w, g) if {
	withdrawn(w)
	not _granted_after(g, w)
}

_granted_after(g, w) if ns(g.granted_at) > ns(w.withdrawn_at)

# METADATA
# title: Clock skew
# description: |
#   How far ahead of the decision's time a consent may have been captured and still count
#   (nanoseconds): the consent store accepts captures up to 5 minutes ahead of its clock.
clock_skew_ns := 300000000000

# METADATA
# title: Grant in effect
# description: |
#   True when grant c was captured by now (allowing clock_skew_ns): a consent dated in the
#   future (a wrong clock, a typo in bundle data) is no consent yet. A grant without a time is
#   in effect.
in_effect(c) if not c.granted_at

in_effect(c) if ns(c.granted_at) <= now_ns + clock_skew_ns

# METADATA
# title: Withdrawn consent
# description: |
#   True when consent record c is a withdrawal: its status says so, or it says granted but names
#   a withdrawal time and no grant after it. The state store never produces the second kind (a
#   grant clears the withdrawal time); a static provider or bundle data can, and a record that
#   contradicts itself denies: takes_back(c, c) holds, so it vetoes itself.
withdrawn(c) if c.status == "withdrawn"

withdrawn(c) if {
	c.status == "granted"
	c.withdrawn_at
	not _granted_after(c, c)
}

# METADATA
# title: Records decided
# description: |
#   The records ({customer_id, enrichment}) this request decides: the one customer of a
#   request-phase input, or every record of a list's response phase. Custom record-level rules
#   (record_deny[customer_id] in a consentry.custom package) iterate it, so one rule serves
#   single reads and list filtering alike.
records contains rec if {
	object.get(input, "phase", "request") == "request"
	object.get(object.get(input, "resource", {}), "customer_id", "") != ""
	rec := {"customer_id": input.resource.customer_id, "enrichment": input.enrichment}
}

records contains rec if {
	input.phase == "response"
	some rec in input.records
}
