# METADATA
# title: Consent before use (principle 1)
# description: |
#   A purpose whose legal basis is consent needs the customer's opt-in for that purpose (or a
#   parent purpose): granted (not dated in the future), not taken back by a later withdrawal
#   covering the purpose, not expired, and - when the purpose names a min_notice_version in the
#   catalogue - given under that privacy notice or a later one. Decided per customer record.
package consentry.consent

import data.consentry.util

# METADATA
# title: Record denials
# description: Consent reasons that deny access to one customer's record rec ({customer_id, enrichment}).
record_deny(rec) := {r |
	util.purpose.consent_required
	some r in _consent_reasons(rec.enrichment.consents)
}

# One chain, each test run once: a granted, unexpired consent covering the purpose says
# nothing; otherwise explain the best we know, most specific first (withdrawn, expired,
# outdated notice, missing).
_consent_reasons(consents) := set() if {
	some c in consents
	_valid(c)
	not _vetoed(c, consents)
} else := {util.reason("consent.withdrawn", 451, sprintf("the customer withdrew consent for %q", [input.purpose]))} if {
	some c in consents
	util.withdrawn(c)
	_covers(c)
} else := {util.reason("consent.expired", 451, sprintf("the customer's consent for %q has expired", [input.purpose]))} if {
	some c in consents
	_covers(c)
	_expired(c)
} else := {util.reason("consent.notice_outdated", 451, util.notice_outdated_message(input.purpose, util.purpose))} if {
	some c in consents
	c.status == "granted"
	_covers(c)
	not _notice_ok(c)
} else := {util.reason("consent.missing", 451, sprintf("the customer has not opted in to %q", [input.purpose]))}

# A consent covers the declared purpose when given for it or for a parent purpose: its
# purpose is one of util.covering_purposes, computed once per decision.
_covers(c) if c.purpose in util.covering_purposes

_valid(c) if {
	c.status == "granted"
	_covers(c)
	not _expired(c)
	util.in_effect(c)
	_notice_ok(c)
}

# A purpose may name the oldest privacy notice (min_notice_version) under which a consent still
# counts: a customer who agreed to an older text has not agreed to what the notice says now.
# Versions are dates "YYYY-MM" or "YYYY-MM-DD" (util.notice_ok): a consent naming no version,
# or one in another format, is older than any; a minimum in another format fails closed.
_notice_ok(c) if util.notice_ok(c, util.purpose)

# A withdrawal covering the declared purpose that takes the grant back (util.takes_back).
_vetoed(g, consents) if {
	some w in consents
	_covers(w)
	util.takes_back(w, g)
}

_expired(c) if c.status == "expired"

_expired(c) if {
	c.expires_at
	util.ns(c.expires_at) <= util.now_ns
}
