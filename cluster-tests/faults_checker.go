//go:build ignore

// Command faults_checker checks a fault test's tag history for
// linearizability with porcupine (github.com/anishathalye/porcupine v1.3.1)
// and, when it is not linearizable, writes porcupine's visualization.
//
// It is not part of package clustertests: the fault tests embed this file,
// build it in a module of its own (the repository's go.mod does not require
// porcupine) and run it on the history they recorded:
//
//	faults_checker HISTORY.json VISUALIZATION.html
//
// and it prints {"result": "ok"|"illegal"|"unknown", ...} on stdout.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// input is what the tests write (see faults_porcupine_test.go).
type input struct {
	Ops []struct {
		Process int    `json:"process"`
		Kind    string `json:"kind"` // put, get
		Key     string `json:"key"`
		Value   string `json:"value"`
		Call    int64  `json:"call"`
		Return  int64  `json:"return"` // for ambiguous ops: after everything else
		Meta    string `json:"meta"`
	} `json:"ops"`
	Annotations []struct {
		Tag         string `json:"tag"`
		Start       int64  `json:"start"`
		End         int64  `json:"end"`
		Description string `json:"description"`
	} `json:"annotations"`
	TimeoutSeconds int `json:"timeout_seconds"`
}

// regInput is an operation on the tag register Key: put(Key, Value) or
// get(Key); a get's output is the digest read ("" when the tag is absent).
type regInput struct {
	Put   bool
	Key   string
	Value string
}

func short(d string) string {
	if d == "" {
		return "none"
	}
	if len(d) > 7+12 {
		return d[7 : 7+12]
	}
	return d
}

// tagModel is one register per tag (the partition key): put sets it, get
// must return it. An ambiguous put (its outcome unknown) returns "at
// infinity", so the checker may linearize it anywhere after its call, or
// never observe it.
var tagModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		i := in.(regInput)
		if i.Put {
			return true, i.Value
		}
		return out.(string) == state.(string), state
	},
	DescribeOperation: func(in, out interface{}) string {
		i := in.(regInput)
		if i.Put {
			return fmt.Sprintf("put(%s, %s)", i.Key, short(i.Value))
		}
		return fmt.Sprintf("get(%s) -> %s", i.Key, short(out.(string)))
	},
	DescribeState:             func(state interface{}) string { return short(state.(string)) },
	DescribeOperationMetadata: func(m interface{}) string { s, _ := m.(string); return s },
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: faults_checker HISTORY.json VISUALIZATION.html")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ops := make([]porcupine.Operation, 0, len(in.Ops))
	for _, o := range in.Ops {
		ops = append(ops, porcupine.Operation{
			ClientId: o.Process,
			Input:    regInput{Put: o.Kind == "put", Key: o.Key, Value: o.Value},
			Output:   o.Value,
			Call:     o.Call,
			Return:   o.Return,
			Metadata: o.Meta,
		})
	}
	timeout := time.Duration(in.TimeoutSeconds) * time.Second
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(tagModel, ops, timeout)
	result := map[porcupine.CheckResult]string{porcupine.Ok: "ok", porcupine.Illegal: "illegal", porcupine.Unknown: "unknown"}[res]
	out := map[string]any{"result": result, "ops": len(ops), "seconds": time.Since(start).Seconds()}
	if res != porcupine.Ok {
		var anns []porcupine.Annotation
		for _, a := range in.Annotations {
			anns = append(anns, porcupine.Annotation{Tag: a.Tag, Start: a.Start, End: a.End, Description: a.Description,
				BackgroundColor: "#f8d7da"})
		}
		info.AddAnnotations(anns)
		if err := porcupine.VisualizePath(tagModel, info, os.Args[2]); err != nil {
			out["visualization_error"] = err.Error()
		} else {
			out["visualization"] = os.Args[2]
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
