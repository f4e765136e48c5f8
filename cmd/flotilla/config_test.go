package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Precedence: flag, then FLOTILLA_* environment, then the YAML file, then
// the default.
func TestConfigSources(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		env      map[string]string
		file     string
		wantAddr string
		wantJoin []string
		wantErr  bool
	}{
		{name: "default", wantAddr: ":5000"},
		{name: "file", file: "http-addr: \":6000\"\njoin: [a:1, b:2]\n", wantAddr: ":6000", wantJoin: []string{"a:1", "b:2"}},
		{name: "env beats file", file: "http-addr: \":6000\"\n", env: map[string]string{"FLOTILLA_HTTP_ADDR": ":7000"}, wantAddr: ":7000"},
		{name: "flag beats env", args: []string{"--http-addr", ":8000"}, env: map[string]string{"FLOTILLA_HTTP_ADDR": ":7000"}, wantAddr: ":8000"},
		{name: "env list", env: map[string]string{"FLOTILLA_JOIN": "x:1,y:2"}, wantAddr: ":5000", wantJoin: []string{"x:1", "y:2"}},
		{name: "unknown file key", file: "no-such-flag: 1\n", wantErr: true},
		{name: "bad env value", env: map[string]string{"FLOTILLA_VOTER": "maybe"}, wantErr: true},
		{name: "malformed file", file: "http-addr: [\n", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cmd := newServeCommand()
			args := tc.args
			cfgPath := ""
			if tc.file != "" {
				cfgPath = filepath.Join(t.TempDir(), "flotilla.yaml")
				if err := os.WriteFile(cfgPath, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", cfgPath)
			}
			if err := cmd.Flags().Parse(args); err != nil {
				t.Fatal(err)
			}
			err := applyConfigSources(cmd.Flags(), cfgPath)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := cmd.Flags().GetString("http-addr")
			if got != tc.wantAddr {
				t.Errorf("http-addr %q, want %q", got, tc.wantAddr)
			}
			join, _ := cmd.Flags().GetStringSlice("join")
			if len(join) != len(tc.wantJoin) {
				t.Fatalf("join %v, want %v", join, tc.wantJoin)
			}
			for i := range join {
				if join[i] != tc.wantJoin[i] {
					t.Errorf("join %v, want %v", join, tc.wantJoin)
				}
			}
		})
	}
}

func TestByteSizeFlag(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "512MiB", want: 512 << 20},
		{in: "20GiB", want: 20 << 30},
		{in: "2GB", want: 2_000_000_000},
		{in: "lots", wantErr: true},
		{in: "-1GiB", wantErr: true},
		{in: "99999999EiB", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			var v int64
			err := (&byteSize{&v}).Set(tc.in)
			if (err != nil) != tc.wantErr || v != tc.want {
				t.Fatalf("Set(%q) = %d, %v; want %d, error %v", tc.in, v, err, tc.want, tc.wantErr)
			}
		})
	}
	// Through the serve command's flags, from a config file key.
	cmd := newServeCommand()
	path := filepath.Join(t.TempDir(), "flotilla.yaml")
	if err := os.WriteFile(path, []byte("blob-cache-size: 3GiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigSources(cmd.Flags(), path); err != nil {
		t.Fatal(err)
	}
	if got := cmd.Flags().Lookup("blob-cache-size").Value.String(); got != "3.0 GiB" {
		t.Fatalf("blob-cache-size from the file: %q", got)
	}
}
