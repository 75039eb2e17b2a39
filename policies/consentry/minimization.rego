# METADATA
# title: Data minimization and special categories (principles 4 and 5)
# description: |
#   Each requested field gets an outcome for the declared purpose: allow, mask (with a mask
#   kind) or deny. A field outside the catalogue is denied. Special categories (payment, health)
#   additionally need a role that the category names and a multi-factor credential; otherwise
#   the field is denied.
package consentry.minimization

import data.consentry.processor
import data.consentry.util

# METADATA
# title: Field outcomes
# description: Outcome for every requested field, keyed by field path.
# (A complete rule: evaluated once per query however often the decision refers to it.)
fields := {f: _outcome(f) | some f in object.get(input.resource, "fields", [])}

# Category prefixes the purpose allows, with a trailing dot so matching keeps key boundaries.
_allow_prefixes := {sprintf("%s.", [k]) | some k in util.purpose.categories.allow}

# Special categories the caller may not see (role or MFA condition unmet).
_blocked_special := {sprintf("%s.", [k]) | some k, s in util.catalog.special_categories; not _special_ok(s)}

_outcome(f) := o if {
	def := util.catalog.fields[f]
	o := object.union(_base(def.category, concat("", [def.category, "."])), _scope(def))
} else := {"outcome": "deny", "category": "unknown"}

_scope(def) := {"category": def.category, "key_scope": def.key_scope} if def.key_scope

else := {"category": def.category}

# c is the category, cd the category with a trailing dot (prefix matching on key boundaries).
_base(c, cd) := {"outcome": "deny"} if {
	not processor.category_covered(c)
} else := {"outcome": "deny"} if {
	strings.any_prefix_match(cd, _blocked_special)
} else := {"outcome": "allow"} if {
	strings.any_prefix_match(cd, _allow_prefixes)
} else := {"outcome": "mask", "mask": _mask(c)} if {
	_mask(c)
} else := {"outcome": "deny"}

# The most specific mask entry wins.
_mask(c) := m if {
	ks := [k | some k, _ in util.purpose.categories.mask; util.category_matches(c, k)]
	count(ks) > 0
	longest := max([count(k) | some k in ks])
	some k in ks
	count(k) == longest
	m := util.purpose.categories.mask[k]
}

_special_ok(s) if {
	_mfa_ok(s)
	_role_in(s)
}

_mfa_ok(s) if not s.require_mfa

_mfa_ok(_) if input.subject.mfa == true

_role_in(s) if {
	some role in util.roles
	role in s.roles
}

# Special category of each requested special-category field, computed once per query.
_field_special := {f: s |
	some f, o in fields
	some k, s in util.catalog.special_categories
	util.category_matches(o.category, k)
}

# METADATA
# title: Information reasons
# description: Explains why special-category fields were withheld.
info contains util.reason("special_category.mfa_required", 200, sprintf("%s withheld: needs a multi-factor credential", [f])) if {
	not input.subject.mfa == true
	some f, s in _field_special
	s.require_mfa
}

info contains util.reason("special_category.role_required", 200, sprintf("%s withheld: none of the caller's roles may see %s", [f, s.title])) if {
	some f, s in _field_special
	not _role_in(s)
}

# METADATA
# title: Key scopes
# description: Key classes needed to serve the fields (allowed fields, and masks computed from the value).
key_scopes := {o.key_scope | some o in fields; o.key_scope; _needs_key(o)}

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
