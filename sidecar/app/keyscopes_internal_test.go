package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

// TestPolicyKeyScopesMustBeVaultClasses: a policy whose catalogue gives a field a key class
// that vault.classes lacks is refused at activation (at start and for every bundle), since an
// erasure would leave that class's keys alive and the data under them readable in backups. The
// shipped library against the shipped default passes; against the four classes of earlier
// versions it is refused, naming the notes fields; without a vault section nothing is checked.
func TestPolicyKeyScopesMustBeVaultClasses(t *testing.T) {
	ps, err := engine.LoadDir(pipelinetest.RepoRoot()+"/policies", engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		classes []string
		want    []string // in the error; nil: activated
	}{
		{"no vault section", nil, nil},
		{"default classes", vaultkeys.DefaultClasses, nil},
		{"classes before notes", []string{"contact", "identity", "financial", "health"}, []string{"notes (note.body)", "notes (notes)", "vault.classes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := engine.New(engine.Config{}, slog.New(slog.DiscardHandler))
			act := &activator{eng: eng, routes: &routes.Holder{}, keyClasses: tt.classes}
			err := act.Load(context.Background(), ps)
			active := eng.Ready()
			if tt.want == nil {
				if err != nil || !active {
					t.Fatalf("refused: %v (active %v)", err, active)
				}
				return
			}
			if err == nil || active {
				t.Fatalf("activated a policy whose key scopes vault.classes lacks (err %v)", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
