package acpi

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needTool skips the test if an ACPICA tool is not installed.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s missing: apt-get install acpica-tools (make test installs it)", name)
	}
	return path
}

// iaslWarnings matches what the ACPICA disassembler prints for a table it
// finds inconsistent (checksum, length, unknown opcodes).
var iaslWarnings = regexp.MustCompile(`(?i)warning|error|incorrect|invalid|unknown|mismatch`)

// TestIASLDisassemble writes each table (except the RSDP, which iasl
// cannot disassemble standalone) to a file, disassembles it with `iasl -d`,
// and checks the decoded fields against the config.
func TestIASLDisassemble(t *testing.T) {
	iasl := needTool(t, "iasl")
	cfg := testConfig()
	cfg.SleepControlPort = 0x3c4
	cfg.SleepStatusPort = 0x3c5
	cfg.ResetPort = 0x3c6
	tb, err := Build(cfg, testBase)
	if err != nil {
		t.Fatalf("Build() error: %v", err)
	}
	dir := t.TempDir()
	dsl := map[string]string{}
	for _, b := range tb.Blobs()[1:] {
		dat := filepath.Join(dir, strings.ToLower(b.Name)+".dat")
		if err := os.WriteFile(dat, b.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(iasl, "-d", dat)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("iasl -d %s: %v\n%s", b.Name, err, out)
		}
		if m := iaslWarnings.FindString(string(out)); m != "" {
			t.Errorf("iasl -d %s printed %q:\n%s", b.Name, m, out)
		}
		src, err := os.ReadFile(strings.TrimSuffix(dat, ".dat") + ".dsl")
		if err != nil {
			t.Fatal(err)
		}
		if m := iaslWarnings.FindString(string(src)); m != "" {
			t.Errorf("%s disassembly contains %q:\n%s", b.Name, m, src)
		}
		dsl[b.Name] = string(src)
	}

	wantDSDT := []string{
		`Name (\_S5, Package (0x04)`,
		`Scope (\_SB)`,
	}
	for i, d := range cfg.Devices {
		wantDSDT = append(wantDSDT,
			fmt.Sprintf("Device (%s)", d.Name),
			fmt.Sprintf("0x%08X,         // Address Base", d.Base),
			fmt.Sprintf("0x%08X,         // Address Length", d.Size),
			fmt.Sprintf("0x%08X,\n", d.IRQ),
			fmt.Sprintf("Name (_UID, %s)", map[int]string{0: "Zero", 1: "One", 2: "0x02"}[i]),
		)
	}
	wantDSDT = append(wantDSDT,
		"Device (COM1)",
		`Name (_HID, EisaId ("PNP0501")`,
		"IO (Decode16,\n 0x03F8, // Range Minimum\n 0x03F8, // Range Maximum\n 0x01, // Alignment\n 0x08, // Length",
		"Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n {\n 0x00000004,",
	)
	checkContains(t, "DSDT", dsl["DSDT"], wantDSDT)
	for _, want := range []struct {
		re string
		n  int
	}{
		{`Name \(_HID, "LNRO0005"\)`, 3},
		{`Memory32Fixed \(ReadWrite,`, 3},
		{`Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)`, 4},
	} {
		if got := len(regexp.MustCompile(want.re).FindAllString(dsl["DSDT"], -1)); got != want.n {
			t.Errorf("DSDT has %d matches of %s, want %d", got, want.re, want.n)
		}
	}

	if got := strings.Count(dsl["MADT"], "[Processor Local APIC]"); got != cfg.VCPUs {
		t.Errorf("MADT has %d local APICs, want %d", got, cfg.VCPUs)
	}
	checkContains(t, "MADT", dsl["MADT"], []string{
		"Signature : \"APIC\"",
		"Local Apic Address : FEE00000",
		"Subtable Type : 01 [I/O APIC]",
		"Address : FEC00000",
		"Interrupt : 00000000",
		"Processor Enabled : 1",
	})
	checkContains(t, "FADT", dsl["FADT"], []string{
		"Signature : \"FACP\"",
		"Revision : 06",
		"Hardware Reduced (V5) : 1",
		"Reset Register Supported (V2) : 1",
		"Value to cause reset : 01",
		fmt.Sprintf("DSDT Address : %016X", tb.DSDTAddr),
		"Sleep Control Register : [Generic Address Structure]",
		"Sleep Status Register : [Generic Address Structure]",
		"Space ID : 01 [SystemIO]",
		"Address : 00000000000003C4",
		"Address : 00000000000003C5",
		"Address : 00000000000003C6",
	})
	checkContains(t, "XSDT", dsl["XSDT"], []string{
		fmt.Sprintf("ACPI Table Address   0 : %016X", tb.FADTAddr),
		fmt.Sprintf("ACPI Table Address   1 : %016X", tb.MADTAddr),
	})
}

// checkContains reports each want missing from the disassembly, comparing
// with runs of spaces collapsed.
func checkContains(t *testing.T, name, src string, wants []string) {
	t.Helper()
	squash := regexp.MustCompile(`\s+`)
	flat := squash.ReplaceAllString(src, " ")
	for _, w := range wants {
		if !strings.Contains(flat, squash.ReplaceAllString(w, " ")) {
			t.Errorf("%s disassembly lacks %q:\n%s", name, w, src)
		}
	}
}

// TestACPIExec loads the DSDT, FADT and MADT into acpiexec (the ACPICA
// interpreter Linux uses) and evaluates \_S5 and each device's _HID and
// _CRS, so the AML is checked by execution, not only by disassembly.
func TestACPIExec(t *testing.T) {
	acpiexec := needTool(t, "acpiexec")
	tb, err := Build(testConfig(), testBase)
	if err != nil {
		t.Fatalf("Build() error: %v", err)
	}
	dir := t.TempDir()
	var files []string
	for _, b := range tb.Blobs()[2:] {
		f := filepath.Join(dir, b.Name+".dat")
		if err := os.WriteFile(f, b.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	cmds := []string{`evaluate \_S5`, `evaluate \_SB.COM1._HID`, `evaluate \_SB.COM1._CRS`}
	for _, d := range testConfig().Devices {
		cmds = append(cmds, `evaluate \_SB.`+d.Name+`._HID`, `evaluate \_SB.`+d.Name+`._CRS`)
	}
	args := append([]string{"-b", strings.Join(cmds, "; ")}, files...)
	out, err := exec.Command(acpiexec, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("acpiexec: %v\n%s", err, out)
	}
	s := string(out)
	if strings.Contains(s, "AE_") {
		t.Errorf("acpiexec reported an ACPICA exception:\n%s", s)
	}
	flat := regexp.MustCompile(`\s+`).ReplaceAllString(s, " ")
	wants := []string{
		"[Package] Contains 4 Elements: [Integer] = 0000000000000005 [Integer] = 0000000000000000",
		`[String] Length 08 = "LNRO0005"`,
		"[Integer] = 000000000105D041", // EisaId("PNP0501")
		"[Buffer] Length 13 = 0000: 47 01 F8 03 F8 03 01 08 89 06 00 03 01 04 00 00 // G............... 0010: 00 79",
	}
	for _, d := range testConfig().Devices {
		crs, err := resourceTemplate(memory32Fixed(uint32(d.Base), uint32(d.Size)), extInterrupt(intConsumer|intEdge, d.IRQ))
		if err != nil {
			t.Fatal(err)
		}
		wants = append(wants, fmt.Sprintf("[Buffer] Length %02X = ", len(crs)-4)) // minus op, PkgLength, size
	}
	for _, w := range wants {
		if !strings.Contains(flat, w) {
			t.Errorf("acpiexec output lacks %q:\n%s", w, s)
		}
	}
	if n, want := strings.Count(s, "Evaluation of"), 3+2*len(testConfig().Devices); n != want {
		t.Errorf("acpiexec evaluated %d objects, want %d:\n%s", n, want, s)
	}
}
