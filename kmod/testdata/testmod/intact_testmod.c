// SPDX-License-Identifier: GPL-2.0
/*
 * intact_testmod: the out-of-tree "driver" of intact's kmod VM tests.
 *
 * It does what a vendor driver does that matters for trust: it is loaded
 * from a file, and it requests a firmware blob. Writing a firmware name to
 * /sys/module/intact_testmod/parameters/request makes it call
 * request_firmware_direct() for a platform device; the outcome is readable
 * in fw_status (0 or -errno), fw_size and fw_crc32 (crc32_le(~0, data)),
 * and logged as "intact_testmod: firmware NAME: ...".
 */
#include <linux/crc32.h>
#include <linux/firmware.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>

#ifndef INTACT_TESTMOD_VERSION
#define INTACT_TESTMOD_VERSION "0"
#endif

static struct platform_device *pdev;
static int fw_status = 1; /* 1: nothing requested yet */
static unsigned int fw_size;
static unsigned int fw_crc32;

module_param(fw_status, int, 0444);
MODULE_PARM_DESC(fw_status, "result of the last firmware request: 0 or -errno (1: none yet)");
module_param(fw_size, uint, 0444);
MODULE_PARM_DESC(fw_size, "size of the last firmware loaded");
module_param(fw_crc32, uint, 0444);
MODULE_PARM_DESC(fw_crc32, "crc32_le(~0, data) of the last firmware loaded");

static int request_set(const char *val, const struct kernel_param *kp)
{
	const struct firmware *fw;
	char name[128];
	size_t n = strscpy(name, val, sizeof(name));
	int err;

	if ((ssize_t)n <= 0)
		return -EINVAL;
	if (name[n - 1] == '\n')
		name[n - 1] = 0;
	err = request_firmware_direct(&fw, name, &pdev->dev);
	fw_status = err;
	if (err) {
		fw_size = 0;
		fw_crc32 = 0;
		pr_info("intact_testmod: firmware %s: error %d\n", name, err);
		return 0;
	}
	fw_size = fw->size;
	fw_crc32 = crc32_le(~0, fw->data, fw->size);
	pr_info("intact_testmod: firmware %s: %zu bytes crc32 %08x\n", name, fw->size, fw_crc32);
	release_firmware(fw);
	return 0;
}

static const struct kernel_param_ops request_ops = {
	.set = request_set,
};
module_param_cb(request, &request_ops, NULL, 0200);
MODULE_PARM_DESC(request, "write a firmware name to request it");

static int __init intact_testmod_init(void)
{
	pdev = platform_device_register_simple("intact_testmod", -1, NULL, 0);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	pr_info("intact_testmod: version %s loaded\n", INTACT_TESTMOD_VERSION);
	return 0;
}

static void __exit intact_testmod_exit(void)
{
	platform_device_unregister(pdev);
	pr_info("intact_testmod: version %s unloaded\n", INTACT_TESTMOD_VERSION);
}

module_init(intact_testmod_init);
module_exit(intact_testmod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("intact test driver: loads from a file, requests firmware");
MODULE_VERSION(INTACT_TESTMOD_VERSION);
