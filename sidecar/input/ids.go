package input

import "strings"

// ValidID reports whether id has the shape of an id the state store accepts for customers,
// cases, processors, events and assignees: 1-128 of A-Z a-z 0-9 . _ : @ + -, starting with a
// letter or digit (CRM ids, UUIDs, emails-as-ids; no spaces, no control or path characters).
// The key store uses the same rule to tell a CRM id from something that is no id at all.
func ValidID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		alnum := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
		if !alnum && (i == 0 || strings.IndexByte("._:@+-", b) < 0) {
			return false
		}
	}
	return true
}
