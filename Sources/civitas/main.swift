import CivitasCrypto
print("civitas")
