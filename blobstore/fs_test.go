package blobstore_test

import (
	"testing"

	"github.com/flotilla/flotilla/blobstore"
	"github.com/flotilla/flotilla/blobstore/drivertest"
)

func TestFSDriver(t *testing.T) {
	dir := t.TempDir()
	drivertest.Run(t, func(t *testing.T) blobstore.Driver {
		d, err := blobstore.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
