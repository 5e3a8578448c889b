import TroupeAPI
