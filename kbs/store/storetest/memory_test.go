package storetest_test

import (
	"testing"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return storetest.NewMemory() })
}
