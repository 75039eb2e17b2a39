# METADATA
# title: Test fixtures
# description: Base inputs shared by the policy tests; each test varies one thing.
package consentry.fixtures_test

# METADATA
# title: Now
# description: 2026-11-22T09:00:00Z in nanoseconds.
now_ns := 1795338000000000000

# METADATA
# title: Customer state
# description: A live customer within retention.
customer := {"id": "c-1", "retention_until": "2030-01-01T00:00:00Z", "erased": false}

# METADATA
# title: Consent
# description: A granted consent record for purpose p.
granted(p) := {"purpose": p, "status": "granted", "notice_version": "2026-03", "channel": "web", "granted_at": "2026-03-02T10:00:00Z"}

# METADATA
# title: Support read
# description: A support agent assigned to open case case-7 reads customer c-1.
support := {
	"request": {"method": "GET", "path": "/api/customers/c-1"},
	"subject": {"id": "emp-17", "type": "employee", "roles": ["support_agent"]},
	"purpose": "essential.service.operations.support",
	"case_id": "case-7",
	"action": "read",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "contact.email", "date_of_birth", "payment.card_number", "health.notes"]},
	"enrichment": {
		"consents": [],
		"case": {"id": "case-7", "customer_id": "c-1", "assignees": ["emp-17"], "status": "open"},
		"customer": customer,
	},
	"time": {"now": "2026-11-22T09:00:00Z", "now_ns": now_ns},
}

# METADATA
# title: Marketing read
# description: A marketing employee reads customer c-1 who opted in to email marketing.
marketing := replace(support, {
	"subject": {"id": "emp-40", "type": "employee", "roles": ["marketing"]},
	"purpose": "marketing.communications.email",
	"case_id": "",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "contact.email", "contact.phone"]},
	"enrichment": {"consents": [granted("marketing.communications.email")], "customer": customer},
})

# METADATA
# title: Customer self read
# description: Customer c-1 reads their own record with MFA.
self_read := replace(support, {
	"subject": {"id": "u-1", "type": "customer", "customer_id": "c-1", "mfa": true},
	"purpose": "essential.service",
	"case_id": "",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "contact.email", "payment.card_number", "health.notes"]},
	"enrichment": {"consents": [], "customer": customer},
})

# METADATA
# title: Processor read
# description: Processor p-mail reads c-1 under an agreement covering contact data.
processor := replace(support, {
	"subject": {"id": "svc-mail", "type": "processor", "processor_id": "p-mail"},
	"purpose": "third_party_sharing",
	"case_id": "",
	"resource": {"type": "customer", "customer_id": "c-1", "fields": ["id", "name", "contact.email", "date_of_birth"]},
	"enrichment": {
		"consents": [granted("third_party_sharing")],
		"customer": customer,
		"agreement": {"processor_id": "p-mail", "purposes": ["third_party_sharing"], "categories": ["user.unique_id", "user.name", "user.contact.email"], "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"},
	},
})

# METADATA
# title: Codes
# description: The reason codes of a decision.
codes(d) := {r.code | some r in d.reasons}

# METADATA
# title: Replace
# description: base with the top-level keys of patch replaced (object.union would merge nested objects).
replace(base, patch) := object.union(object.remove(base, object.keys(patch)), patch)
