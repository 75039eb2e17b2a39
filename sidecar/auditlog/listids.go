package auditlog

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// listIDs maps the raw ids of every customer of a list response (served and filtered) to
// their pseudonyms, for the request-level strings of the list's record: the request names the
// customers too (a search `?q=c-3003 c-1001`, an export's path, a justification), and a raw id
// there would sit right beside its pseudonym in customers / customers_filtered. A list names
// up to tens of thousands of customers, so the idSet's id-by-id scan of every string (O(ids ×
// text)) is out: a string is walked once, and each word that may start an id is looked up in
// a map, O(text).
//
// The words are those of replaceInText: an id is replaced where it stands as a whole word
// (its neighbours are not letters, digits, '-' or '_'). An id that is one such word is found
// by its word; an id with other characters in it (an email address) is found by its leading
// word, then compared in full.
type listIDs struct {
	word map[string]string
	// multi are the ids that are not a single word, by leading word ("" for an id that starts
	// with another character), longest first.
	multi map[string][]idPair
}

// add maps id (and its JSON text, when it is not valid UTF-8) to pseudonym p.
func (l *listIDs) add(id, p string) {
	if id == "" {
		return
	}
	l.add1(id, p)
	if !utf8.ValidString(id) {
		// JSON encoding turns invalid bytes into U+FFFD: match that form too (as addID does).
		l.add1(sanitizeUTF8(id), p)
	}
}

func (l *listIDs) add1(id, p string) {
	lead := leadingWord(id)
	if lead == id {
		if l.word == nil {
			l.word = make(map[string]string)
		}
		l.word[id] = p
		return
	}
	if l.multi == nil {
		l.multi = make(map[string][]idPair)
	}
	c := l.multi[lead]
	if slices.ContainsFunc(c, func(x idPair) bool { return x.id == id }) {
		return
	}
	c = append(c, idPair{id, p})
	// Longest first: of two ids at the same place ("ada", "ada@example.com") the longer wins,
	// whatever order the list named them in.
	slices.SortStableFunc(c, func(a, b idPair) int { return len(b.id) - len(a.id) })
	l.multi[lead] = c
}

// pseudonym returns the pseudonym of an id added whole.
func (l *listIDs) pseudonym(id string) (string, bool) {
	if l == nil {
		return "", false
	}
	if p, ok := l.word[id]; ok {
		return p, true
	}
	for _, c := range l.multi[leadingWord(id)] {
		if c.id == id {
			return c.pseudonym, true
		}
	}
	return "", false
}

// leadingWord is the run of word characters (isIDChar) id starts with.
func leadingWord(id string) string {
	i := 0
	for i < len(id) && isIDChar(id[i]) {
		i++
	}
	return id[:i]
}

// replace returns s with every id of l that stands in it as a whole word replaced by its
// pseudonym, in one pass over s.
func (l *listIDs) replace(s string) string {
	if l == nil || s == "" || (len(l.word) == 0 && len(l.multi) == 0) {
		return s
	}
	var b *strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if i > 0 && isIDChar(s[i-1]) {
			i++ // inside a word: no id starts here
			continue
		}
		j := i
		for j < len(s) && isIDChar(s[j]) {
			j++
		}
		if id, p, ok := l.at(s, i, s[i:j]); ok {
			if b == nil {
				b = &strings.Builder{}
				b.Grow(len(s) + 32)
			}
			b.WriteString(s[last:i])
			b.WriteString(p)
			i += len(id)
			last = i
			continue
		}
		i = max(j, i+1)
	}
	if b == nil {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// at returns the id of l that starts at s[i] as a whole word, w being the word there.
func (l *listIDs) at(s string, i int, w string) (string, string, bool) {
	if w == "" && len(l.multi[""]) == 0 {
		return "", "", false
	}
	for _, c := range l.multi[w] {
		if end := i + len(c.id); strings.HasPrefix(s[i:], c.id) && (end == len(s) || !isIDChar(s[end])) {
			return c.id, c.pseudonym, true
		}
	}
	if w != "" {
		if p, ok := l.word[w]; ok {
			return w, p, true
		}
	}
	return "", "", false
}

// text is pseudonymizeText for the list's ids: s as its JSON text will say it (invalid bytes
// as U+FFFD), ids replaced.
func (l *listIDs) text(s string) string {
	if l == nil || s == "" {
		return s
	}
	if !utf8.ValidString(s) {
		s = sanitizeUTF8(s)
	}
	return l.replace(s)
}

// replaceTree applies l.replace to every string and map key of a generic JSON value, as
// replaceIDs does for the event's ids.
func (l *listIDs) replaceTree(v any) any { return rewriteStrings(v, l.replace) }

// replaceMembers applies l to the members of a generic input or result document except
// "records", the list's per-customer part, which listDetails pseudonymized record by record.
// The member names themselves are the document's own, as the typed encoder writes them.
func (l *listIDs) replaceMembers(doc any) {
	m, ok := doc.(map[string]any)
	if !ok || l == nil {
		return
	}
	for k, v := range m {
		if k != "records" {
			m[k] = l.replaceTree(v)
		}
	}
}
