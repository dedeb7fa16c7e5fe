/* mailctl commands (the operator's CLI). Each returns a process exit
 * status: 0 ok, 1 failure, 2 usage error. */
#ifndef NODE_CTL_H
#define NODE_CTL_H

int ctl_main(int argc, char **argv);

#endif
