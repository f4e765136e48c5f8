// Command flotilla is the Flotilla registry: `flotilla serve` runs a node;
// other subcommands operate a running cluster or its data.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla:", err)
		os.Exit(1)
	}
}
