// Command vault is a real HashiCorp Vault server built from the Go module, used by consentry's
// tests and demo (there is no Vault package in this machine's registries). It is a separate
// module so consentry's own go.mod never depends on the Vault server.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
