// Package storetest holds the conformance suite every store.Store backend
// runs (Run), and Memory, an in-memory Store for tests of packages built on
// the store. Nothing here is used by production code.
package storetest
