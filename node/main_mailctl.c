/* mailctl: the operator's command-line tool. */
#include "node/ctl.h"

int main(int argc, char **argv)
{
	return ctl_main(argc, argv);
}
