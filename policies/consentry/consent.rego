# METADATA
# title: Consent before use (principle 1)
# description: |
#   A purpose whose legal basis is consent needs the customer's opt-in for that purpose (or a
#   parent purpose): granted, not withdrawn, not expired. Decided per customer record.
package consentry.consent

import data.consentry.util

# METADATA
# title: Record denials
# description: Consent reasons that deny access to one customer's record rec ({customer_id, enrichment}).
record_deny(rec) := {r |
	util.purpose.consent_required
	some r in _consent_reasons(rec.enrichment.consents)
}

# A granted, unexpired consent covers the purpose: nothing to say.
_consent_reasons(consents) := set() if {
	some c in consents
	_valid(c)
}

# No valid consent: explain the best we know, most specific first.
_consent_reasons(consents) := {util.reason("consent.withdrawn", 451, sprintf("the customer withdrew consent for %q", [input.purpose]))} if {
	not _any_valid(consents)
	some c in consents
	_covers(c)
	c.status == "withdrawn"
}

_consent_reasons(consents) := {util.reason("consent.expired", 451, sprintf("the customer's consent for %q has expired", [input.purpose]))} if {
	not _any_valid(consents)
	not _any_withdrawn(consents)
	some c in consents
	_covers(c)
	_expired(c)
}

_consent_reasons(consents) := {util.reason("consent.missing", 451, sprintf("the customer has not opted in to %q", [input.purpose]))} if {
	not _any_valid(consents)
	not _any_withdrawn(consents)
	not _any_expired(consents)
}

_covers(c) if util.purpose_covers(c.purpose, input.purpose)

_valid(c) if {
	_covers(c)
	c.status == "granted"
	not _expired(c)
}

_expired(c) if c.status == "expired"

_expired(c) if {
	c.expires_at
	util.ns(c.expires_at) <= util.now_ns
}

_any_valid(consents) if {
	some c in consents
	_valid(c)
}

_any_withdrawn(consents) if {
	some c in consents
	_covers(c)
	c.status == "withdrawn"
}

_any_expired(consents) if {
	some c in consents
	_covers(c)
	_expired(c)
}
