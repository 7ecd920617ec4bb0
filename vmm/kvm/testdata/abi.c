#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#define S(t) printf("sizeof %-40s %zu\n", #t, sizeof(struct t))
#define O(t,f) printf("offset %-40s %zu\n", #t "." #f, offsetof(struct t, f))
#define I(n) printf("ioctl  %-40s 0x%lX\n", #n, (unsigned long)(n))
int main(){
S(kvm_regs);S(kvm_sregs);S(kvm_segment);S(kvm_dtable);S(kvm_run);S(kvm_cpuid2);S(kvm_cpuid_entry2);S(kvm_msrs);S(kvm_msr_entry);S(kvm_userspace_memory_region);S(kvm_irq_level);S(kvm_pit_config);S(kvm_fpu);
O(kvm_regs,rip);O(kvm_regs,rflags);
O(kvm_sregs,cs);O(kvm_sregs,gdt);O(kvm_sregs,idt);O(kvm_sregs,cr0);O(kvm_sregs,efer);O(kvm_sregs,apic_base);O(kvm_sregs,interrupt_bitmap);
O(kvm_segment,base);O(kvm_segment,limit);O(kvm_segment,selector);O(kvm_segment,type);O(kvm_segment,present);O(kvm_segment,dpl);O(kvm_segment,db);O(kvm_segment,s);O(kvm_segment,l);O(kvm_segment,g);O(kvm_segment,avl);O(kvm_segment,unusable);O(kvm_segment,padding);
O(kvm_dtable,base);O(kvm_dtable,limit);O(kvm_dtable,padding);
O(kvm_run,request_interrupt_window);O(kvm_run,immediate_exit);O(kvm_run,exit_reason);O(kvm_run,ready_for_interrupt_injection);O(kvm_run,if_flag);O(kvm_run,flags);O(kvm_run,cr8);O(kvm_run,apic_base);
O(kvm_run,io);O(kvm_run,io.direction);O(kvm_run,io.size);O(kvm_run,io.port);O(kvm_run,io.count);O(kvm_run,io.data_offset);
O(kvm_run,mmio);O(kvm_run,mmio.phys_addr);O(kvm_run,mmio.data);O(kvm_run,mmio.len);O(kvm_run,mmio.is_write);
O(kvm_run,fail_entry.hardware_entry_failure_reason);O(kvm_run,fail_entry.cpu);
O(kvm_run,internal.suberror);O(kvm_run,internal.ndata);O(kvm_run,internal.data);
O(kvm_run,system_event.type);O(kvm_run,system_event.ndata);O(kvm_run,system_event.data);
O(kvm_run,hw.hardware_exit_reason);
O(kvm_run,kvm_valid_regs);O(kvm_run,kvm_dirty_regs);O(kvm_run,s);
O(kvm_cpuid2,nent);O(kvm_cpuid2,entries);
O(kvm_cpuid_entry2,function);O(kvm_cpuid_entry2,index);O(kvm_cpuid_entry2,flags);O(kvm_cpuid_entry2,eax);O(kvm_cpuid_entry2,padding);
O(kvm_msrs,entries);O(kvm_msr_entry,data);
O(kvm_userspace_memory_region,guest_phys_addr);O(kvm_userspace_memory_region,memory_size);O(kvm_userspace_memory_region,userspace_addr);
I(KVM_GET_API_VERSION);I(KVM_CREATE_VM);I(KVM_CHECK_EXTENSION);I(KVM_GET_VCPU_MMAP_SIZE);I(KVM_GET_SUPPORTED_CPUID);
I(KVM_SET_USER_MEMORY_REGION);I(KVM_SET_TSS_ADDR);I(KVM_SET_IDENTITY_MAP_ADDR);I(KVM_CREATE_IRQCHIP);I(KVM_CREATE_PIT2);I(KVM_IRQ_LINE);I(KVM_CREATE_VCPU);
I(KVM_RUN);I(KVM_GET_REGS);I(KVM_SET_REGS);I(KVM_GET_SREGS);I(KVM_SET_SREGS);I(KVM_SET_CPUID2);I(KVM_SET_MSRS);I(KVM_GET_MSRS);I(KVM_GET_FPU);I(KVM_SET_FPU);
printf("KVM_EXIT_IO %d MMIO %d HLT %d SHUTDOWN %d FAIL_ENTRY %d INTR %d INTERNAL %d SYSTEM_EVENT %d EXCEPTION %d DEBUG %d HYPERCALL %d IRQ_WINDOW_OPEN %d UNKNOWN %d NMI %d\n",KVM_EXIT_IO,KVM_EXIT_MMIO,KVM_EXIT_HLT,KVM_EXIT_SHUTDOWN,KVM_EXIT_FAIL_ENTRY,KVM_EXIT_INTR,KVM_EXIT_INTERNAL_ERROR,KVM_EXIT_SYSTEM_EVENT,KVM_EXIT_EXCEPTION,KVM_EXIT_DEBUG,KVM_EXIT_HYPERCALL,KVM_EXIT_IRQ_WINDOW_OPEN,KVM_EXIT_UNKNOWN,KVM_EXIT_NMI);
printf("caps IRQCHIP %d USER_MEMORY %d SET_TSS_ADDR %d EXT_CPUID %d PIT2 %d SET_IDENTITY_MAP_ADDR %d IMMEDIATE_EXIT %d NR_VCPUS %d MAX_VCPUS %d NR_MEMSLOTS %d\n",KVM_CAP_IRQCHIP,KVM_CAP_USER_MEMORY,KVM_CAP_SET_TSS_ADDR,KVM_CAP_EXT_CPUID,KVM_CAP_PIT2,KVM_CAP_SET_IDENTITY_MAP_ADDR,KVM_CAP_IMMEDIATE_EXIT,KVM_CAP_NR_VCPUS,KVM_CAP_MAX_VCPUS,KVM_CAP_NR_MEMSLOTS);
printf("internal suberr EMUL %d SIMUL_EX %d DELIVERY_EV %d UNEXPECTED_EXIT %d; sysev SHUTDOWN %d RESET %d CRASH %d\n",KVM_INTERNAL_ERROR_EMULATION,KVM_INTERNAL_ERROR_SIMUL_EX,KVM_INTERNAL_ERROR_DELIVERY_EV,KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,KVM_SYSTEM_EVENT_SHUTDOWN,KVM_SYSTEM_EVENT_RESET,KVM_SYSTEM_EVENT_CRASH);
printf("MEM_LOG_DIRTY %d READONLY %d\n", KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY);
}
