#ifndef CIVITAS_CSODIUM_SHIM_H
#define CIVITAS_CSODIUM_SHIM_H
#include <sodium.h>
#endif
