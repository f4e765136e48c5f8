package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// applyConfigSources fills every flag the user did not set on the command
// line, from FLOTILLA_<NAME> environment variables first, then from the YAML
// file named by --config (keys are flag names). Flags beat env, env beats
// the file, the file beats defaults.
func applyConfigSources(flags *pflag.FlagSet, configPath string) error {
	fileValues := map[string]any{}
	if configPath != "" {
		raw, err := os.ReadFile(configPath)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(raw, &fileValues); err != nil {
			return fmt.Errorf("config file %s: %w", configPath, err)
		}
		for k := range fileValues {
			if flags.Lookup(k) == nil || k == "config" {
				return fmt.Errorf("config file %s: unknown key %q", configPath, k)
			}
		}
	}
	var firstErr error
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		env := "FLOTILLA_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				firstErr = fmt.Errorf("%s=%q: %w", env, v, err)
			}
			return
		}
		v, ok := fileValues[f.Name]
		if !ok {
			return
		}
		var s string
		switch t := v.(type) {
		case []any:
			parts := make([]string, len(t))
			for i, p := range t {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(t)
		}
		if err := f.Value.Set(s); err != nil {
			firstErr = fmt.Errorf("config key %s=%q: %w", f.Name, s, err)
		}
	})
	return firstErr
}
