package engine

import "github.com/consentry/consentry/sidecar/input"

// internCatalog registers the catalogue's purposes, roles and field names (and the purposes
// each role may act for) with input.Intern, so converting an input does not allocate for the
// strings every request repeats. A policy set without a catalogue registers nothing.
func internCatalog(data map[string]any) {
	cons, _ := data["consentry"].(map[string]any)
	cat, _ := cons["catalog"].(map[string]any)
	if cat == nil {
		return
	}
	var ss []string
	for _, k := range []string{"purposes", "roles", "fields"} {
		m, _ := cat[k].(map[string]any)
		for name, v := range m {
			ss = append(ss, name)
			if k != "roles" {
				continue
			}
			def, _ := v.(map[string]any)
			ps, _ := def["purposes"].([]any)
			for _, p := range ps {
				if s, ok := p.(string); ok {
					ss = append(ss, s)
				}
			}
		}
	}
	input.Intern(ss)
}
