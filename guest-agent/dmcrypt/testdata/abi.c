/* Prints the device-mapper ioctl ABI that guest-agent/dmcrypt hard-codes.
   Build and run: gcc -o abi abi.c && ./abi   (see README.md) */
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>

#define SZ(t) printf("sizeof %s = %zu\n", #t, sizeof(t))
#define OFF(t, f) printf("%s.%s = %zu\n", #t, #f, offsetof(t, f))
#define NUM(n) printf("%s = 0x%lX\n", #n, (unsigned long)(n))

int main(void) {
	SZ(struct dm_ioctl);
	OFF(struct dm_ioctl, version);
	OFF(struct dm_ioctl, data_size);
	OFF(struct dm_ioctl, data_start);
	OFF(struct dm_ioctl, target_count);
	OFF(struct dm_ioctl, open_count);
	OFF(struct dm_ioctl, flags);
	OFF(struct dm_ioctl, event_nr);
	OFF(struct dm_ioctl, dev);
	OFF(struct dm_ioctl, name);
	OFF(struct dm_ioctl, uuid);
	OFF(struct dm_ioctl, data);
	SZ(struct dm_target_spec);
	OFF(struct dm_target_spec, sector_start);
	OFF(struct dm_target_spec, length);
	OFF(struct dm_target_spec, status);
	OFF(struct dm_target_spec, next);
	OFF(struct dm_target_spec, target_type);
	NUM(DM_NAME_LEN);
	NUM(DM_UUID_LEN);
	NUM(DM_MAX_TYPE_NAME);
	NUM(DM_VERSION_MAJOR);
	NUM(DM_VERSION);
	NUM(DM_DEV_CREATE);
	NUM(DM_DEV_REMOVE);
	NUM(DM_DEV_SUSPEND);
	NUM(DM_DEV_STATUS);
	NUM(DM_TABLE_LOAD);
	NUM(DM_READONLY_FLAG);
	NUM(DM_SUSPEND_FLAG);
	NUM(DM_SECURE_DATA_FLAG);
	NUM(DM_BUFFER_FULL_FLAG);
	return 0;
}
