// Package clustertests holds end-to-end tests that start real processes: the
// flotilla binary built from this repository, a real MinIO server and real
// registry clients (crane, regctl, oras, skopeo, docker where an engine
// answers), plus the OCI distribution-spec conformance suite.
//
// Everything lives in _test.go files; production code never imports this
// package. Run the whole suite, with every external tool installed, through
// scripts/test.sh. Useful environment variables:
//
//	FLOTILLA_REQUIRE_TOOLS=1      fail (instead of skip) when a tool is missing
//	FLOTILLA_BINARY=path          use this flotilla binary instead of building one
//	FLOTILLA_RACE_BINARY=1        build the flotilla binary with -race
//	FLOTILLA_TARGET=distribution  run the registry tests against CNCF Distribution's
//	                              "registry" binary instead of flotilla (harness check)
//	FLOTILLA_CONFORMANCE_URL=url  run TestConformance against an already running
//	                              registry (FLOTILLA_CONFORMANCE_SPARSE=true if it
//	                              accepts sparse manifests); OCI_* variables in the
//	                              environment override the suite settings
//	FLOTILLA_TEST_ARTIFACTS=dir   copy process logs and conformance reports there
//	FLOTILLA_FAULT_SEED=N         replay the fault schedule of a TestFault* run (each
//	                              run prints its seed)
//
// The fault tests (TestFault*) need root, iproute2 and iptables (network
// namespaces, tmpfs mounts); TestDeployCompose needs a Docker engine and
// skips, saying so, when none answers.
package clustertests
