# METADATA
# title: Data minimization and special categories (principles 4 and 5)
# description: |
#   Each requested field gets an outcome for the declared purpose: allow, mask (with a mask
#   kind) or deny. A field outside the catalogue is denied. Special categories (payment, health)
#   additionally need a role that the category names and a multi-factor credential; otherwise
#   the field is denied. Under break-glass the role the category names must itself be one that
#   may use break-glass for the purpose: holding one role that may break glass and another that
#   may see health data does not add up to emergency access to health data.
package consentry.minimization

import data.consentry.breakglass
import data.consentry.fastpath
import data.consentry.processor
import data.consentry.util

# METADATA
# title: Field outcomes
# description: |
#   Outcome for every requested field, keyed by field path. A complete rule, evaluated once per
#   query however often the decision refers to it. Built from the per-purpose table with set
#   built-ins (no rule evaluation per field): the purpose's outcome for each requested catalogue
#   field, overridden by a deny for the fields the caller may not see (blocked special
#   categories, categories a processor agreement does not cover), plus a deny for every
#   requested field the catalogue does not know.
fields := object.union(known, _unknown(known)) if {
	# An employee or service with one role that may act for the purpose: the fast path's
	# section for that role already holds every field's outcome with the blocked special
	# categories denied (see _section).
	known := object.filter(_section.fields, _requested)
} else := _fields_by_rules

_fields_by_rules := object.union_n([_known, _denied_fields, _unknown(_known)])

# METADATA
# title: Denied fields
# description: |
#   Every requested field denied, with its category and key scope (a field the catalogue does
#   not know: category "unknown"). The fields of a denied decision.
denied_fields := object.union(known, _unknown(known)) if {
	known := object.filter(_tables.denied, _requested)
}

# The precomputed section (consentry.fastpath) of the declared purpose for the caller's single
# role and MFA state, when there is one. Its field outcomes, key scopes, allowed fields and
# information reasons are, by construction, what the rules below give for such a caller (no
# processor agreement applies to employees and services), so the full rules read them from it
# instead of recomputing them: a request the fast path leaves to the full rules (a missing
# consent or case, break-glass, an unknown field, a write the purpose forbids) pays for the
# record checks only. Under active break-glass the section still holds: the caller's one role
# then may use break-glass for the purpose (breakglass.active), so it sees a special category
# exactly when the category names it, as the section says.
_section := fastpath._sec if input.subject.type in {"employee", "service"}

_requested := object.get(input.resource, "fields", [])

# The table of the declared purpose; an unknown purpose allows and masks nothing.
_purpose_table := t if {
	t := _tables.purposes[input.purpose]
} else := _tables.no_purpose

_known := object.filter(_purpose_table.fields, _requested)

# The requested catalogue fields as a set: the later filters take it as is (an array of keys
# would be converted to a set on every call).
_known_names := object.keys(_known)

# Requested catalogue fields the caller may not see whatever the purpose says.
_denied_names := _blocked_names | _uncovered_names

_denied_fields := object.filter(_tables.denied, _denied_names & _known_names)

# The requested fields the catalogue does not know, denied, given the known ones.
_unknown(known) := {} if {
	# Every requested field is distinct and known (the common case): nothing to add.
	count(known) == count(_requested)
} else := {f: {"outcome": "deny", "category": "unknown"} |
	some f in _requested
	not _tables.denied[f]
}

# Special categories the caller may not see (role or MFA condition unmet).
_blocked_specials := {k | some k, s in util.catalog.special_categories; not _special_ok(s)}

_blocked_names := {f | some k in _blocked_specials; some f, _ in _tables.special_fields[k]}

_uncovered_names := {f |
	processor.active
	some f in _requested
	def := util.catalog.fields[f]
	not processor.category_covered(def.category)
}

# METADATA
# title: Field tables
# description: |
#   Everything about field outcomes that depends on the catalogue only, not on the request:
#   per purpose the outcome of every catalogue field before caller conditions (fields), the
#   key scope of each field that outcome needs a key for (key_fields) and the allowed fields
#   (allowed); the deny outcome of every field (denied); per special category its fields with
#   the withholding messages (special_fields). The engine evaluates this rule once when it
#   loads a policy and serves it from data.consentry.generated.minimization_tables, so a
#   decision only looks entries up; plain `opa test` computes it here.
tables := {
	"purposes": {p: _table_for(def) | some p, def in util.catalog.purposes},
	"no_purpose": _table_for({"categories": {"allow": [], "mask": {}}}),
	"denied": {f: object.union({"outcome": "deny"}, _scope(def)) | some f, def in util.catalog.fields},
	"special_fields": {k: _special_fields(k, s) | some k, s in util.catalog.special_categories},
}

_tables := data.consentry.generated.minimization_tables if {
	data.consentry.generated.minimization_tables
} else := tables

_table_for(pdef) := {"fields": fs, "key_fields": kf, "allowed": al} if {
	prefixes := {concat("", [k, "."]) | some k in pdef.categories.allow}
	fs := {f: object.union(_static(pdef, prefixes, def.category), _scope(def)) | some f, def in util.catalog.fields}
	kf := {f: util.catalog.fields[f].key_scope | some f, o in fs; o.key_scope; _needs_key(o)}
	al := {f: true | some f, o in fs; o.outcome == "allow"}
}

_special_fields(k, s) := {f: m |
	some f, def in util.catalog.fields
	util.category_matches(def.category, k)
	m := {
		"mfa": sprintf("%s withheld: needs a multi-factor credential", [f]),
		"role": sprintf("%s withheld: none of the caller's roles may see %s", [f, s.title]),
		"break_glass": sprintf("%s withheld: under break-glass access only a role that may use break-glass may see %s", [f, s.title]),
	}
}

_scope(def) := {"category": def.category, "key_scope": def.key_scope} if def.key_scope

else := {"category": def.category}

# The purpose's outcome for category c: allowed, masked (most specific mask entry) or denied.
_static(pdef, prefixes, c) := {"outcome": "allow"} if {
	strings.any_prefix_match(concat("", [c, "."]), prefixes)
} else := {"outcome": "mask", "mask": m} if {
	m := _mask(pdef, c)
} else := {"outcome": "deny"}

# The most specific mask entry wins.
_mask(pdef, c) := m if {
	ks := [k | some k, _ in pdef.categories.mask; util.category_matches(c, k)]
	count(ks) > 0
	longest := max([count(k) | some k in ks])
	some k in ks
	count(k) == longest
	m := pdef.categories.mask[k]
}

_special_ok(s) if {
	_mfa_ok(s)
	_role_in(s)
}

_mfa_ok(s) if not s.require_mfa

_mfa_ok(_) if input.subject.mfa == true

# A processor is a system acting under a recorded agreement that must cover the category
# (processor.category_covered), not a person who could present a second factor: a category may
# exempt it from the MFA condition.
_mfa_ok(s) if {
	s.mfa_exempt_processors == true
	input.subject.type == "processor"
}

# The caller holds a role the category names.
_holds_role(s) if {
	some role in util.roles
	role in s.roles
}

# The caller may see the category: a role it names, and under break-glass one role that is
# named by the category and may itself use break-glass for the purpose.
_role_in(s) if {
	not breakglass.active
	_holds_role(s)
}

_role_in(s) if {
	breakglass.active
	some role in util.roles
	role in s.roles
	breakglass.emergency_role(role)
}

# METADATA
# title: Information reasons
# description: Explains why special-category fields were withheld.
info := {util.reason(r.code, 200, r.message) |
	some rs in object.filter(_section.info, _requested)
	some r in rs
} if {
	_section
} else := _info

_info contains util.reason("special_category.mfa_required", 200, m.mfa) if {
	some k, s in util.catalog.special_categories
	not _mfa_ok(s)
	some m in object.filter(_tables.special_fields[k], _known_names)
}

_info contains util.reason("special_category.role_required", 200, m.role) if {
	some k, s in util.catalog.special_categories
	not _holds_role(s)
	some m in object.filter(_tables.special_fields[k], _known_names)
}

_info contains util.reason("special_category.break_glass_role_required", 200, m.break_glass) if {
	some k, s in util.catalog.special_categories
	_holds_role(s)
	not _role_in(s)
	some m in object.filter(_tables.special_fields[k], _known_names)
}

# METADATA
# title: Special-category fields released
# description: |
#   The requested special-category fields served in some form (allowed or masked): with
#   break-glass, what the decision flags for review (consentry.breakglass).
special_released := {f |
	some f, o in fields
	o.outcome != "deny"
	some k, _ in util.catalog.special_categories
	_tables.special_fields[k][f]
}

# METADATA
# title: Key scopes
# description: Key classes needed to serve the fields (allowed fields, and masks computed from the value).
key_scopes := {k | some k in object.filter(_section.key_fields, _requested)} if {
	_section
} else := _key_scopes_by_rules

_key_scopes_by_rules := {s | some s in object.remove(object.filter(_purpose_table.key_fields, _known_names), _denied_names)}

# METADATA
# title: Allowed fields
# description: The requested fields served in full.
allowed := object.keys(object.filter(_section.allowed, _requested)) if {
	_section
} else := _allowed_by_rules

_allowed_by_rules := object.keys(object.remove(object.filter(_purpose_table.allowed, _known_names), _denied_names))

_needs_key(o) if o.outcome == "allow"

_needs_key(o) if {
	o.outcome == "mask"
	o.mask != "redact"
}

# METADATA
# title: Request-level denials
# description: Writes (create, update) may only carry fields the purpose allows in full.
deny contains util.reason("field.write_not_allowed", 422, sprintf("field %q may not be written for purpose %q", [f, input.purpose])) if {
	input.action in {"create", "update"}
	some f, o in fields
	o.outcome != "allow"
}
