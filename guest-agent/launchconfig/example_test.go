package launchconfig_test

import (
	"fmt"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
)

func ExampleModules() {
	required, optional := launchconfig.Modules("snp")
	fmt.Println(required[len(required)-1], optional)
	// Output: sev-guest [aesni_intel configfs tsm]
}
