# METADATA
# title: Sub-processors (principle 7)
# description: |
#   A third party gets data only under a recorded agreement that names it, is in force now,
#   covers the declared purpose (names it or a parent purpose; the purpose itself when the
#   catalogue marks it agreement_exact), and - field by field - the data categories it receives.
package consentry.processor

import data.consentry.util

_processor if input.subject.type == "processor"

# METADATA
# title: Active
# description: True when the caller is a processor (third party).
active if _processor

_agreement := input.enrichment.agreement

# METADATA
# title: Request-level denials
# description: No agreement, someone else's agreement, an agreement not in force or not covering the purpose.
deny contains util.reason("processor.no_agreement", 403, sprintf("processor %q has no recorded agreement", [object.get(input.subject, "processor_id", "")])) if {
	_processor
	not _agreement
}

deny contains util.reason("processor.agreement_mismatch", 403, "the agreement belongs to another processor") if {
	_processor
	_agreement.processor_id != object.get(input.subject, "processor_id", "")
}

deny contains util.reason("processor.agreement_not_started", 403, "the processor agreement is not in force yet") if {
	_processor
	util.ns(_agreement.valid_from) > util.now_ns
}

deny contains util.reason("processor.agreement_not_started", 403, "the processor agreement has no start date") if {
	_processor
	_agreement
	not _agreement.valid_from
}

deny contains util.reason("processor.agreement_expired", 403, "the processor agreement has expired") if {
	_processor
	util.ns(_agreement.valid_until) <= util.now_ns
}

deny contains util.reason("processor.agreement_unbounded", 403, "the processor agreement has no end date") if {
	_processor
	_agreement
	not _agreement.valid_until
}

deny contains util.reason("processor.purpose_not_covered", 403, sprintf("the processor agreement does not cover purpose %q", [input.purpose])) if {
	_processor
	_agreement
	not _purpose_covered
}

# An agreement for the purpose or a parent of it covers the purpose, unless the catalogue marks
# the purpose agreement_exact: then only an agreement naming the purpose itself does (charging
# a card is not "operating the service").
_purpose_covered if {
	not util.purpose.agreement_exact == true
	some p in _agreement.purposes
	p in util.covering_purposes
}

_purpose_covered if {
	util.purpose.agreement_exact == true
	input.purpose in _agreement.purposes
}

# METADATA
# title: Category covered
# description: True when the caller is not a processor, or its agreement covers category c.
category_covered(_) if not _processor

category_covered(c) if {
	_processor
	some k in _agreement.categories
	util.category_matches(c, k)
}
